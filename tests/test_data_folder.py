"""ImageFolder on a folder with one file of every awkward kind, plus labels and errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data.messy import gradient, make_messy_folder
from icbpl.data import DataError, ImageFolder, ImageSource, load_dataset
from icbpl.data._imageio import probe, to_rgb_array


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageFolder, dict]:
    root = tmp_path_factory.mktemp("messy") / "photos"
    expected = make_messy_folder(root)
    return ImageFolder(root), expected


def _pixel(folder: ImageFolder, rel: str) -> np.ndarray:
    return folder.load(folder.ids.index(rel)).numpy().transpose(1, 2, 0)


def test_every_good_file_is_listed_and_nothing_else(messy: tuple[ImageFolder, dict]) -> None:
    folder, expected = messy
    assert isinstance(folder, ImageSource)
    assert folder.ids == sorted(expected["good"] + sorted(expected["decode_fails"]))
    assert len(folder) == len(folder.ids)


def test_every_bad_entry_is_skipped_with_its_reason(messy: tuple[ImageFolder, dict]) -> None:
    folder, expected = messy
    reasons = dict(folder.skipped)
    assert set(reasons) == set(expected["bad"])
    for rel, fragment in expected["bad"].items():
        assert fragment in reasons[rel], (rel, reasons[rel])


def test_load_never_raises_and_returns_rgb_uint8(messy: tuple[ImageFolder, dict]) -> None:
    folder, _ = messy
    for i in range(len(folder)):
        img = folder.load(i)
        assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3


def test_decode_time_failure_gives_placeholder_once(messy: tuple[ImageFolder, dict]) -> None:
    folder, expected = messy
    (rel,) = expected["decode_fails"]
    first, second = _pixel(folder, rel), _pixel(folder, rel)
    assert first.shape == (6, 8, 3) and (first == 128).all() and (second == 128).all()
    assert [p for p, _ in folder.degraded] == [rel]
    assert "failed to decode" in folder.summary()


def test_full_validation_rejects_decode_time_failures(tmp_path: Path) -> None:
    expected = make_messy_folder(tmp_path / "m")
    folder = ImageFolder(tmp_path / "m", validate="full")
    (rel,) = expected["decode_fails"]
    assert rel not in folder.ids and "decoding failed" in dict(folder.skipped)[rel]


def test_colour_modes_become_rgb(messy: tuple[ImageFolder, dict]) -> None:
    folder, _ = messy
    assert (_pixel(folder, "grey.png") == 100).all()
    assert (_pixel(folder, "bilevel.bmp") == 255).all()
    rgba = _pixel(folder, "rgba.png")
    assert (rgba[:, :4] == 255).all()  # transparent pixels composited on white
    assert (rgba[:, 4:] == (0, 0, 255)).all()
    assert (_pixel(folder, "grey_alpha.png") == 255).all()
    assert (_pixel(folder, "cmyk.tif") == (255, 0, 0)).all()
    assert np.abs(_pixel(folder, "cmyk.jpg").astype(int) - (255, 0, 0)).max() <= 8
    sixteen = _pixel(folder, "sixteen_bit.png")
    assert sixteen[0, :4, 0].tolist() == [0, 128, 255, 255]
    palette = _pixel(folder, "palette.gif")
    assert palette.shape == (12, 16, 3)


def test_exif_orientation_is_applied(messy: tuple[ImageFolder, dict]) -> None:
    folder, _ = messy
    assert _pixel(folder, "exif_rotated.jpg").shape == (8, 4, 3)  # stored 8 wide, 4 high


def test_lossless_pixels_are_exact(messy: tuple[ImageFolder, dict]) -> None:
    folder, _ = messy
    want = np.asarray(gradient(seed=6))
    assert np.array_equal(_pixel(folder, "ünïcödé dir/spaced name é.png"), want)
    assert np.array_equal(_pixel(folder, "photo.webp"), np.asarray(gradient(seed=4)))


def test_duplicates_are_kept_and_reported(messy: tuple[ImageFolder, dict]) -> None:
    folder, expected = messy
    assert folder.duplicate_groups == expected["duplicates"]
    assert {"dup_a.png", "sub/dup_b.png"} <= set(folder.ids)
    assert "groups of exact duplicates" in folder.summary()


def test_hidden_entries_can_be_included(tmp_path: Path) -> None:
    make_messy_folder(tmp_path / "m")
    folder = ImageFolder(tmp_path / "m", include_hidden=True)
    assert {".hidden.png", ".hidden_dir/inside.png"} <= set(folder.ids)


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    gradient(20, 20).save(tmp_path / "a.png")
    gradient(4, 4).save(tmp_path / "b.png")
    folder = ImageFolder(tmp_path, max_pixels=100)
    assert folder.ids == ["b.png"] and "too large" in folder.skipped[0][1]


def test_no_recursion_and_no_symlink_following(tmp_path: Path) -> None:
    make_messy_folder(tmp_path / "m")
    flat = ImageFolder(tmp_path / "m", recursive=False)
    assert all("/" not in i for i in flat.ids)
    linked = tmp_path / "outer"
    linked.mkdir()
    os.symlink(tmp_path / "m" / "sub", linked / "alias", target_is_directory=True)
    gradient().save(linked / "own.png")
    assert "alias/dup_b.png" in ImageFolder(linked).ids
    kept = ImageFolder(linked, follow_symlinks=False)
    assert kept.ids == ["own.png"] and "not followed" in dict(kept.skipped)["alias"]


def test_class_folders_give_labels(tmp_path: Path) -> None:
    for cls, n in (("dog", 2), ("cat", 3)):
        (tmp_path / cls).mkdir()
        for k in range(n):
            gradient(seed=k).save(tmp_path / cls / f"{k}.png")
    folder = ImageFolder(tmp_path)
    assert folder.class_names == ["cat", "dog"]
    assert folder.labels is not None and folder.labels.dtype == np.int64
    assert folder.labels.tolist() == [0, 0, 0, 1, 1]
    assert ImageFolder(tmp_path, labels="none").labels is None
    gradient().save(tmp_path / "loose.png")
    assert ImageFolder(tmp_path).labels is None
    with pytest.raises(DataError, match=r"loose\.png"):
        ImageFolder(tmp_path, labels="folders")


def test_one_class_folder_gives_no_labels(tmp_path: Path) -> None:
    (tmp_path / "only").mkdir()
    gradient().save(tmp_path / "only" / "a.png")
    assert ImageFolder(tmp_path).labels is None


def test_empty_and_missing_folders_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no images found under .*supported extensions: .*\.jpg"):
        ImageFolder(tmp_path)
    (tmp_path / "bad.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"1 entries skipped, e\.g\. bad\.jpg: empty file"):
        ImageFolder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(DataError, match="is a file"):
        ImageFolder(tmp_path / "bad.jpg")


def test_fingerprint_tracks_names_sizes_and_mtimes(tmp_path: Path) -> None:
    gradient(seed=1).save(tmp_path / "a.png")
    gradient(seed=2).save(tmp_path / "b.png")
    first = ImageFolder(tmp_path).fingerprint()
    assert ImageFolder(tmp_path).fingerprint() == first
    os.utime(tmp_path / "a.png", ns=(1, 1))
    touched = ImageFolder(tmp_path).fingerprint()
    assert touched != first
    gradient(seed=3).save(tmp_path / "c.png")
    assert ImageFolder(tmp_path).fingerprint() not in (first, touched)


def test_load_dataset_reads_folders_and_split_subfolders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    gradient().save(tmp_path / "train" / "a.png")
    gradient().save(tmp_path / "b.png")
    assert len(load_dataset(tmp_path)) == 2
    assert load_dataset(tmp_path, split="train").ids == ["a.png"]
    with pytest.raises(DataError, match="sub-folder"):
        load_dataset(tmp_path, split="test")


def test_probe_and_conversion_of_rare_modes(tmp_path: Path) -> None:
    as_int = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert to_rgb_array(as_int)[0, :, 0].tolist() == [0, 255]
    as_float = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert to_rgb_array(as_float)[0, :, 0].tolist() == [0, 128, 255]
    transparent = Image.new("P", (2, 1))
    transparent.info["transparency"] = 0
    assert to_rgb_array(transparent).tolist() == [[[255, 255, 255]] * 2]
    gradient().save(tmp_path / "x.tif")
    assert probe(tmp_path / "x.tif") is None
