"""Writers of tiny datasets in the exact official file formats (CIFAR, STL-10, idx, Tiny-ImageNet).

Every writer returns the images it wrote as ``(N, H, W, 3)`` uint8 (HWC, RGB) with their labels,
so that tests can compare what a loader reads with what was written.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from fixtures_data.messy import encode


def images(n: int, side: int, seed: int) -> np.ndarray:
    """``n`` random RGB images of ``side`` x ``side`` (every pixel distinct per position)."""
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    """Official CIFAR row layout: 1024 red, 1024 green, 1024 blue, each row-major 32x32."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)


def write_cifar10(
    root: Path, kind: str, per_batch: int = 3, n_test: int = 2, protocol: int = 2
) -> dict:
    """``cifar-10-batches-py`` (kind "py", pickled with ``protocol`` as the official Python 2
    files were with 2) or ``cifar-10-batches-bin`` (kind "bin")."""
    folder = root / ("cifar-10-batches-py" if kind == "py" else "cifar-10-batches-bin")
    folder.mkdir(parents=True)
    names = [f"class{k}" for k in range(10)]
    out: dict[str, list[np.ndarray]] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    batches = [(f"data_batch_{k}", per_batch, "train") for k in range(1, 6)]
    for seed, (name, n, split) in enumerate([*batches, ("test_batch", n_test, "test")]):
        x = images(n, 32, seed)
        y = np.arange(seed, seed + n) % 10
        out[f"x_{split}"].append(x)
        out[f"y_{split}"].append(y)
        if kind == "py":
            batch = {
                b"batch_label": f"batch {seed}".encode(),
                b"labels": [int(v) for v in y],
                b"data": _cifar_rows(x),
                b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(n)],
            }
            (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        else:
            rec = np.concatenate([y[:, None].astype(np.uint8), _cifar_rows(x)], axis=1)
            (folder / f"{name}.bin").write_bytes(rec.tobytes())
    if kind == "py":
        meta = {b"label_names": [n.encode() for n in names], b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    else:
        (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    result = {k: np.concatenate(v) for k, v in out.items()}
    return {**result, "names": names, "folder": folder}


def write_cifar100(root: Path, kind: str, n_train: int = 5, n_test: int = 3) -> dict:
    """``cifar-100-python`` (kind "py") or ``cifar-100-binary`` (kind "bin")."""
    folder = root / ("cifar-100-python" if kind == "py" else "cifar-100-binary")
    folder.mkdir(parents=True)
    fine = [f"fine{k}" for k in range(100)]
    coarse = [f"coarse{k}" for k in range(20)]
    out: dict[str, object] = {"fine": fine, "coarse": coarse, "folder": folder}
    for seed, (split, n) in enumerate([("train", n_train), ("test", n_test)]):
        x = images(n, 32, 100 + seed)
        y_fine = (np.arange(n) * 7 + seed) % 100
        y_coarse = y_fine % 20
        out.update({f"x_{split}": x, f"fine_{split}": y_fine, f"coarse_{split}": y_coarse})
        if kind == "py":
            d = {
                b"filenames": [b"f.png"] * n,
                b"batch_label": split.encode(),
                b"fine_labels": [int(v) for v in y_fine],
                b"coarse_labels": [int(v) for v in y_coarse],
                b"data": _cifar_rows(x),
            }
            (folder / split).write_bytes(pickle.dumps(d, protocol=2))
        else:
            labels = np.stack([y_coarse, y_fine], axis=1).astype(np.uint8)
            rec = np.concatenate([labels, _cifar_rows(x)], axis=1)
            (folder / f"{split}.bin").write_bytes(rec.tobytes())
    if kind == "py":
        meta = {
            b"fine_label_names": [n.encode() for n in fine],
            b"coarse_label_names": [n.encode() for n in coarse],
        }
        (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    else:
        (folder / "fine_label_names.txt").write_text("\n".join(fine) + "\n")
        (folder / "coarse_label_names.txt").write_text("\n".join(coarse) + "\n")
    return out


def write_stl10(root: Path, n_train: int = 3, n_test: int = 2, n_unlabeled: int = 2) -> dict:
    """``stl10_binary/{train,test}_{X,y}.bin, unlabeled_X.bin, class_names.txt``."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out: dict[str, object] = {"folder": folder}
    for seed, (split, n) in enumerate(
        [("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)]
    ):
        x = images(n, 96, 200 + seed)
        # column-major per channel: store (N, C, W, H) in C order
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 3, 2, 1).tobytes())
        out[f"x_{split}"] = x
        if split != "unlabeled":
            y = (np.arange(n) + seed) % 10 + 1  # 1..10 on disk
            (folder / f"{split}_y.bin").write_bytes(y.astype(np.uint8).tobytes())
            out[f"y_{split}"] = y - 1
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    """An idx file of uint8 data: magic 0 0 0x08 ndim, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, gz: bool, n_train: int = 4, n_test: int = 3) -> dict:
    """The four official MNIST / Fashion-MNIST idx files (``.gz`` when ``gz``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(300)
    out: dict[str, np.ndarray] = {}
    for prefix, split, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
        for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return out


WNIDS = ["n02123045", "n01443537", "n09999999"]
WORDS = {"n01443537": "goldfish, Carassius auratus", "n02123045": "tabby, tabby cat"}
COLOURS = {"n02123045": (250, 10, 10), "n01443537": (10, 250, 10), "n09999999": (10, 10, 250)}


def write_tiny_imagenet(root: Path, per_class: int = 2) -> dict:
    """``tiny-imagenet-200/`` with wnids.txt, words.txt, train/, val/ (annotations), test/."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    words = [f"{w}\t{text}" for w, text in [*WORDS.items(), ("n00000001", "entity")]]
    (base / "words.txt").write_text("\n".join(words) + "\n")
    for w in WNIDS:
        (base / "train" / w / "images").mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("")
        for k in range(per_class):
            img = Image.new("RGB", (64, 64), COLOURS[w])
            (base / "train" / w / "images" / f"{w}_{k}.JPEG").write_bytes(encode(img, "JPEG"))
    val_order = [WNIDS[i % len(WNIDS)] for i in range(5)][::-1]
    lines = []
    for i, w in enumerate(val_order):
        img = Image.new("L" if i == 0 else "RGB", (64, 64), 128 if i == 0 else COLOURS[w])
        (base / "val" / "images" / f"val_{i}.JPEG").write_bytes(encode(img, "JPEG"))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    for i in range(2):
        img = Image.new("RGB", (64, 64), (i * 100, 0, 0))
        (base / "test" / "images" / f"test_{i}.JPEG").write_bytes(encode(img, "JPEG"))
    return {"base": base, "val_wnids": val_order}


def write_cifar10_jpg(root: Path, per_class: int = 2) -> dict:
    """The shared CIFAR-10 JPEG copy layout ``{train,test}/<class>/NNNN.jpg``, one corrupt file."""
    base = root / "cifar10-jpg"
    classes = ["airplane", "cat", "truck"]
    for split, n in (("train", per_class), ("test", 1)):
        for c_idx, cls in enumerate(classes):
            (base / split / cls).mkdir(parents=True)
            for k in range(n):
                img = Image.new("RGB", (32, 32), (c_idx * 100, k * 50, 0))
                (base / split / cls / f"{k:04d}.jpg").write_bytes(encode(img, "JPEG", quality=95))
    (base / "train" / "cat" / "9999.jpg").write_bytes(b"\xff\xd8 broken")
    (base / "test" / "cat" / "0001.jpg").write_bytes(encode(Image.new("RGB", (31, 32)), "JPEG"))
    return {"base": base, "classes": classes}


def make_archive(folder: Path, dest: Path) -> Path:
    """Pack ``folder`` (with its own name as top-level entry) into a .tar.gz, .tar or .zip."""
    if dest.suffix == ".zip":
        with zipfile.ZipFile(dest, "w") as zf:
            for p in sorted(folder.rglob("*")):
                zf.write(p, p.relative_to(folder.parent).as_posix())
    else:
        with tarfile.open(dest, "w:gz" if dest.name.endswith(".gz") else "w") as tf:
            tf.add(folder, arcname=folder.name)
    return dest
