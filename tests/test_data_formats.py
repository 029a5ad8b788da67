"""Dataset loaders on tiny files written in the exact official formats, and the registry."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fixtures_data.formats import (
    COLOURS,
    WNIDS,
    idx_bytes,
    make_archive,
    write_cifar10,
    write_cifar10_jpg,
    write_cifar100,
    write_idx_set,
    write_stl10,
    write_tiny_imagenet,
)
from icbpl.data import DataError, ImageSource, list_datasets, load_dataset
from icbpl.data._packed import _fast_tar, iter_members
from icbpl.data.mnist import read_idx


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ICBPL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ICBPL_DATA", raising=False)


def _check(src: ImageSource, x: np.ndarray, y: np.ndarray | None) -> None:
    assert isinstance(src, ImageSource) and len(src) == len(x) == len(src.ids)
    arr = getattr(src, "as_array")()  # noqa: B009
    assert arr.dtype == np.uint8 and np.array_equal(arr, x)
    assert np.array_equal(src.load(len(x) - 1).numpy(), x[-1].transpose(2, 0, 1))
    if y is None:
        assert src.labels is None
    else:
        assert src.labels is not None and np.array_equal(src.labels, y)


@pytest.mark.parametrize(("kind", "protocol"), [("py", 2), ("py", 5), ("bin", 0)])
def test_cifar10_official(tmp_path: Path, kind: str, protocol: int) -> None:
    w = write_cifar10(tmp_path, kind, protocol=protocol)
    train = load_dataset("cifar10", split="train", root=tmp_path)
    _check(train, w["x_train"], w["y_train"])
    assert train.class_names == w["names"]
    assert train.ids[0] == "cifar10/train/000000"
    _check(load_dataset("cifar10", split="test", root=tmp_path), w["x_test"], w["y_test"])
    both = load_dataset("cifar10", split="all", root=tmp_path)
    _check(
        both,
        np.concatenate([w["x_train"], w["x_test"]]),
        np.concatenate([w["y_train"], w["y_test"]]),
    )
    assert both.ids[-1] == "cifar10/test/000001"
    by_path = load_dataset(w["folder"], split="test")  # the folder itself is recognised
    assert (
        by_path.fingerprint() == load_dataset("cifar10", split="test", root=tmp_path).fingerprint()
    )


def test_cifar10_official_tarball(tmp_path: Path) -> None:
    w = write_cifar10(tmp_path / "x", "py")
    make_archive(w["folder"], tmp_path / "cifar-10-python.tar.gz")
    _check(load_dataset("cifar10", split="test", root=tmp_path), w["x_test"], w["y_test"])
    _check(
        load_dataset(tmp_path / "cifar-10-python.tar.gz", split="test"), w["x_test"], w["y_test"]
    )


def test_cifar_pickles_cannot_run_code(tmp_path: Path) -> None:
    w = write_cifar10(tmp_path, "py")

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    (w["folder"] / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)


@pytest.mark.parametrize("kind", ["py", "bin"])
def test_cifar100_fine_and_coarse(tmp_path: Path, kind: str) -> None:
    w = write_cifar100(tmp_path, kind)
    fine = load_dataset("cifar100", split="train", root=tmp_path)
    _check(fine, w["x_train"], w["fine_train"])
    assert fine.class_names == w["fine"]
    coarse = load_dataset("cifar100", split="all", root=tmp_path, label_type="coarse")
    x = np.concatenate([w["x_train"], w["x_test"]])
    _check(coarse, x, np.concatenate([w["coarse_train"], w["coarse_test"]]))
    assert coarse.class_names == w["coarse"] and len(coarse.class_names) == 20
    with pytest.raises(DataError, match="label_type"):
        load_dataset("cifar100", root=tmp_path, label_type="super")


def test_stl10_column_major_and_labels(tmp_path: Path) -> None:
    w = write_stl10(tmp_path)
    _check(load_dataset("stl10", split="train", root=tmp_path), w["x_train"], w["y_train"])
    _check(
        load_dataset("stl10", split="test", root=tmp_path / "stl10_binary"),
        w["x_test"],
        w["y_test"],
    )
    unl = load_dataset("stl10", split="unlabeled", root=tmp_path)
    _check(unl, w["x_unlabeled"], None)
    both = load_dataset("stl10", split="all", root=tmp_path)
    assert len(both) == len(w["x_train"]) + len(w["x_test"])
    assert both.class_names is not None and both.class_names[7] == "monkey"


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path: Path, gz: bool) -> None:
    w = write_idx_set(tmp_path / "fashion-mnist", gz)
    grey3 = {k: np.repeat(v[..., None], 3, axis=3) for k, v in w.items() if k.startswith("x")}
    src = load_dataset("fashion-mnist", split="train", root=tmp_path)
    _check(src, grey3["x_train"], w["y_train"])
    assert src.class_names is not None and src.class_names[9] == "Ankle boot"
    both = load_dataset(tmp_path / "fashion-mnist", split="all")
    assert len(both) == 7 and both.ids[-1] == "fashion-mnist/test/000002"


def test_mnist_npz_and_idx(tmp_path: Path) -> None:
    w = write_idx_set(tmp_path / "mnist", gz=True)
    _check(
        load_dataset("mnist", split="test", root=tmp_path),
        np.repeat(w["x_test"][..., None], 3, 3),
        w["y_test"],
    )
    np.savez(tmp_path / "mnist.npz", **w)
    src = load_dataset(tmp_path / "mnist.npz", split="all")
    assert len(src) == 7 and src.class_names == [str(d) for d in range(10)]
    other = tmp_path / "digits.npz"
    np.savez(other, x_train=w["x_train"], y_train=w["y_train"])
    assert load_dataset(other).class_names is None
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        load_dataset(other, split="test")


def test_idx_header_is_validated(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "ok").write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(read_idx(tmp_path / "ok"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(idx_bytes(arr)[:-1])
    with pytest.raises(DataError, match="declares shape"):
        read_idx(tmp_path / "short")


def _tiny_expectations(src: ImageSource, val_wnids: list[str]) -> None:
    assert src.class_names == ["tabby", "goldfish", "n09999999"]  # wnids.txt order, words.txt
    assert src.labels is not None
    assert [WNIDS[k] for k in src.labels] == val_wnids
    assert src.ids[0] == "tiny-imagenet/val/val_0.JPEG"
    first = src.load(0).numpy()  # a grey JPEG, as RGB
    assert first.shape == (3, 64, 64) and np.abs(first.astype(int) - 128).max() <= 2
    colour = np.array(COLOURS[val_wnids[1]])
    assert np.abs(src.load(1).numpy()[:, 10, 10] - colour).max() <= 4


@pytest.mark.parametrize("packing", ["folder", "tar.gz", "zip"])
def test_tiny_imagenet_val(tmp_path: Path, packing: str) -> None:
    w = write_tiny_imagenet(tmp_path / "src")
    root = tmp_path / "src"
    if packing != "folder":
        root = tmp_path / "packed"
        root.mkdir()
        make_archive(w["base"], root / f"tiny-imagenet-200.{packing}")
    src = load_dataset("tiny-imagenet", split="val", root=root)
    _tiny_expectations(src, w["val_wnids"])
    again = load_dataset("tiny-imagenet", split="val", root=root)  # from the .npy cache
    assert np.array_equal(getattr(again, "as_array")(), getattr(src, "as_array")())  # noqa: B009
    assert again.fingerprint() == src.fingerprint()


def test_tiny_imagenet_train_all_test(tmp_path: Path) -> None:
    w = write_tiny_imagenet(tmp_path)
    train = load_dataset("tiny-imagenet", split="train", root=tmp_path)
    assert train.labels is not None and train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert len(load_dataset("tiny-imagenet", split="all", root=w["base"])) == 6 + 5
    test = load_dataset("tiny-imagenet", split="test", root=tmp_path, cache=False)
    assert len(test) == 2 and test.labels is None


@pytest.mark.parametrize("packing", ["folder", "tar.gz"])
def test_cifar10_jpeg_copy_layout(tmp_path: Path, packing: str) -> None:
    w = write_cifar10_jpg(tmp_path)
    source = (
        w["base"]
        if packing == "folder"
        else make_archive(w["base"], tmp_path / "cifar10-jpg.tar.gz")
    )
    for _ in range(2):  # decode, then the cache
        src = load_dataset(source, split="all")
        assert len(src) == 3 * 2 + 3  # two of the 11 files are skipped
        assert src.class_names == w["classes"]
        assert src.labels is not None and src.labels.tolist() == [0, 0, 1, 1, 2, 2, 0, 1, 2]
        assert src.ids[2] == "cifar10-jpg/train/cat/0000.jpg"
        reasons = dict(src.skipped)
        assert (
            "train/cat/9999.jpg" in reasons
            and "unexpected size 31x32" in reasons["test/cat/0001.jpg"]
        )
        assert np.abs(src.load(6).numpy()[:, 5, 5].astype(int) - (0, 0, 0)).max() <= 3
    assert len(load_dataset("cifar10", split="test", root=tmp_path, cache=False)) == 3


def test_fast_tar_reader_matches_tarfile(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    long_dir = folder / ("ü" * 60) / ("d" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 120 + ".jpg")).write_bytes(b"x" * 700)
    (folder / "small.txt").write_bytes(b"hello")
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
            for p in sorted(folder.rglob("*")):
                if p.is_file() and (fmt != tarfile.USTAR_FORMAT or len(str(p)) < 200):
                    tf.add(p, arcname=p.relative_to(tmp_path).as_posix())
        data = buf.getvalue()
        buf.seek(0)
        with tarfile.open(fileobj=buf) as tf:
            want = [(m.name, m.offset_data, m.size) for m in tf if m.isfile()]
        assert list(_fast_tar(data)) == want
    (tmp_path / "t.tar").write_bytes(data)
    assert dict(iter_members(tmp_path / "t.tar", lambda n: True))["t/small.txt"] == b"hello"


def test_registry_errors_list_what_is_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = list_datasets()
    assert {"cifar10", "cifar100", "stl10", "mnist", "fashion-mnist", "tiny-imagenet"} <= set(names)
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; known datasets: cifar10"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="ICBPL_DATA"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="no CIFAR-10 files found"):
        load_dataset("cifar10", root=tmp_path)
    write_cifar10(tmp_path, "bin")
    with pytest.raises(
        DataError, match="split='val' is not available for cifar10; expected one of"
    ):
        load_dataset("cifar10", split="val", root=tmp_path)
    monkeypatch.setenv("ICBPL_DATA", str(tmp_path))
    assert len(load_dataset("cifar10", split="test")) == 2
    (tmp_path / "weird.bin").write_bytes(b"")
    with pytest.raises(DataError, match="do not know how to read"):
        load_dataset(tmp_path / "weird.bin")


def test_file_identity_follows_content_not_mtime(tmp_path: Path) -> None:
    """A dataset copied elsewhere (new mtime) keeps its identity, so its caches stay valid."""
    from icbpl.data._base import file_identity

    f = tmp_path / "data.bin"
    f.write_bytes(b"pixels")
    before = file_identity([f])
    os.utime(f, (1_000_000, 1_000_000))
    assert file_identity([f]) == before
    f.write_bytes(b"pixelz")
    assert file_identity([f]) != before
