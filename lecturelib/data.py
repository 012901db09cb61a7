"""Datasets as in-memory tensors: Fashion-MNIST (offline first) and CIFAR-10 (torchvision).

Both return ``(images, labels)``: images float32 ``(N, C, H, W)`` normalized with the training
set's per-channel mean and std, labels int64 ``(N,)``. Small data sets fit in memory (Fashion-MNIST
is 188 MB as float32), which lets ``training.fit`` index batches directly on the device.

Where Fashion-MNIST's files are looked for, in order:

1. the folder in the environment variable ``FASHION_MNIST_DIR``;
2. Debian's package folder ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``);
3. the cache folder ``$LECTURELIB_CACHE/fashion-mnist`` (default ``~/.cache/lecturelib``);
4. a torchvision download into that cache folder.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_FASHION_MNIST_DIR = "FASHION_MNIST_DIR"

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Two ways a file proves it is the real one. The MD5 of the .gz as Zalando publishes it (the list
# torchvision checks), or the SHA-256 of the decompressed IDX bytes, which survives re-compression
# (Debian's package re-gzips the same bytes, so its .gz files have other MD5s).
_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8d0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_RAW_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


class DataNotFoundError(FileNotFoundError):
    """No copy of a data set could be found or downloaded; the message says how to get one."""


class ChecksumError(ValueError):
    """A data file exists but is not the file it claims to be (truncated, corrupted, other data)."""


def cache_dir() -> Path:
    """``$LECTURELIB_CACHE`` or ``~/.cache/lecturelib``: downloads and trained models live here."""
    return Path(os.environ.get("LECTURELIB_CACHE", Path.home() / ".cache" / "lecturelib"))


# ----------------------------------------------------------------------------- IDX files

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) as stored by LeCun's MNIST and by Fashion-MNIST."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ChecksumError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4: 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ChecksumError(f"{path}: header says shape {shape}, file holds {data.size} values")
    return data.reshape(shape)


def _verify(path: Path, raw: bytes) -> None:
    name = path.name
    if name not in _GZ_MD5:
        return
    if hashlib.sha256(raw).hexdigest() == _RAW_SHA256[name]:
        return
    if path.suffix == ".gz" and hashlib.md5(path.read_bytes()).hexdigest() == _GZ_MD5[name]:
        return
    raise ChecksumError(
        f"{path} does not match the published Fashion-MNIST checksum (truncated or corrupted "
        f"download?). Delete it and run again, or point {ENV_FASHION_MNIST_DIR} at a good copy."
    )


def _candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get(ENV_FASHION_MNIST_DIR):
        dirs.append(Path(os.environ[ENV_FASHION_MNIST_DIR]))
    dirs.append(DEBIAN_FASHION_MNIST_DIR)
    cache = cache_dir() / "fashion-mnist"
    dirs += [cache, cache / "FashionMNIST" / "raw"]
    return dirs


def find_fashion_mnist(download: bool = True) -> Path:
    """The first folder (in the module docstring's order) holding all four Fashion-MNIST files."""
    needed = [f for pair in _FILES.values() for f in pair]
    for folder in _candidate_dirs():
        if all((folder / f).is_file() for f in needed):
            return folder
    if download:
        folder = _download_fashion_mnist()
        if folder is not None:
            return folder
    searched = "\n  ".join(str(d) for d in _candidate_dirs())
    raise DataNotFoundError(
        "Fashion-MNIST not found. Looked for " + ", ".join(needed) + " in:\n  " + searched + "\n"
        "Fix one of: (a) on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist; "
        f"(b) put the four files in a folder and set {ENV_FASHION_MNIST_DIR}=that/folder; "
        "(c) connect to the internet once so torchvision can download them into "
        f"{cache_dir() / 'fashion-mnist'}."
    )


def _download_fashion_mnist() -> Path | None:
    root = cache_dir() / "fashion-mnist"
    try:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(root=str(root), train=True, download=True)
        FashionMNIST(root=str(root), train=False, download=True)
    except Exception:  # offline, blocked, disk full: fall through to the instructions
        return None
    folder = root / "FashionMNIST" / "raw"
    return folder if folder.is_dir() else None


@functools.lru_cache(maxsize=4)
def _load_fashion_mnist_uint8(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name in _FILES[split]:
        path = Path(folder) / name
        raw = gzip.decompress(path.read_bytes())
        _verify(path, raw)
        arrays.append(_parse_idx(raw, path))
    images, labels = arrays
    if images.shape[0] != labels.shape[0]:
        raise ChecksumError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


# ----------------------------------------------------------------------------- public loaders

def stratified_subset(labels: torch.Tensor, size: int, *, seed: int = 0) -> torch.Tensor:
    """Indices of ``size`` examples with the classes as balanced as the data allows.

    Each class gets ``size // K`` examples (the remainder goes to the first classes), drawn
    without replacement by a seeded permutation. Returned sorted, as a CPU int64 tensor.
    """
    labels = torch.as_tensor(labels).cpu()
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"subset size must be a positive int, got {size!r}")
    if size > labels.numel():
        raise ValueError(f"subset size {size} is larger than the data set ({labels.numel()})")
    classes = torch.unique(labels)
    gen = torch.Generator().manual_seed(seed)
    per_class = [size // len(classes) + (i < size % len(classes)) for i in range(len(classes))]
    chosen, spare = [], []
    for c, n in zip(classes.tolist(), per_class):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        chosen.append(idx[:n])
        spare.append(idx[n:])
    picked = torch.cat(chosen)
    if len(picked) < size:  # some classes too small: top up from the rest, still seeded
        rest = torch.cat(spare)
        picked = torch.cat([picked, rest[torch.randperm(len(rest), generator=gen)[: size - len(picked)]]])
    return torch.sort(picked).values


def fashion_mnist(
    split: str = "train",
    *,
    subset: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as tensors.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        subset: if given, a stratified, seeded subset of this many examples.
        device: where the tensors go (default CPU).
        seed: seed of the subset draw.

    Returns:
        images: float32 ``(N, 1, 28, 28)``, normalized with the training set's mean and std;
        labels: int64 ``(N,)`` in ``0..9`` (names in ``FASHION_MNIST_CLASSES``).
    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = str(find_fashion_mnist())
    images, labels = _load_fashion_mnist_uint8(folder, split)
    mean, std = _fashion_mnist_stats(folder)
    x = torch.from_numpy(images.copy()).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    if subset is not None:
        idx = stratified_subset(y, subset, seed=seed)
        x, y = x[idx], y[idx]
    x = (x.float() / 255.0 - mean) / std
    return x.to(device), y.to(device)


@functools.lru_cache(maxsize=4)
def _fashion_mnist_stats(folder: str) -> tuple[float, float]:
    train, _ = _load_fashion_mnist_uint8(folder, "train")
    pixels = train.astype(np.float64) / 255.0
    return float(pixels.mean()), float(pixels.std())


def cifar10(
    split: str = "train",
    *,
    subset: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``, with the same interface as
    ``fashion_mnist``: images float32 ``(N, 3, 32, 32)`` normalized per channel with the training
    split's mean and std, labels int64.

    ``root`` defaults to ``$LECTURELIB_CACHE/cifar10``; torchvision downloads there when online and
    checks every batch file's MD5.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else cache_dir() / "cifar10"
    train_x, _ = _cifar10_uint8(str(root), "train", download)
    mean = train_x.float().mean(dim=(0, 2, 3), keepdim=True) / 255.0
    std = (train_x.float() / 255.0).std(dim=(0, 2, 3), keepdim=True)
    x, y = _cifar10_uint8(str(root), split, download)
    if subset is not None:
        idx = stratified_subset(y, subset, seed=seed)
        x, y = x[idx], y[idx]
    x = (x.float() / 255.0 - mean[0]) / std[0]
    return x.to(device), y.to(device)


def _cifar10_uint8(root: str, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(root=root, train=(split == "train"), download=download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DataNotFoundError(
            f"CIFAR-10 not found (or corrupted) under {root}: {err} "
            "Connect to the internet once so torchvision can download it (about 170 MB), or put "
            "the extracted 'cifar-10-batches-py' folder there."
        ) from err
    except OSError as err:  # download attempted without a network
        raise DataNotFoundError(
            f"CIFAR-10 is not under {root} and could not be downloaded ({err}). Connect to the "
            "internet once, or put the extracted 'cifar-10-batches-py' folder there."
        ) from err
    x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return x, y


def write_cifar10_batches(folder: str | Path, images: np.ndarray, labels: np.ndarray, *,
                          n_train_batches: int = 5) -> list[tuple[str, str]]:
    """Write images ``(N, 32, 32, 3)`` uint8 in CIFAR-10's on-disk format (pickled batches in
    ``cifar-10-batches-py``); return ``[(file name, md5)]`` for the batches written.

    The last ``len(images) // (n_train_batches + 1)`` images form ``test_batch``. Used by the tests
    (a tiny archive) and by anyone converting their own images to this format.
    """
    folder = Path(folder) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(images)), n_train_batches + 1)
    names = [f"data_batch_{i + 1}" for i in range(n_train_batches)] + ["test_batch"]
    written = []
    for name, idx in zip(names, chunks):
        entry = {  # the keys and layout of the real batches (channel-major rows of 3072 bytes)
            "batch_label": f"{name} of 6",
            "labels": [int(v) for v in labels[idx]],
            "data": np.ascontiguousarray(images[idx].transpose(0, 3, 1, 2).reshape(len(idx), -1)),
            "filenames": [f"{name}_{i}.png" for i in idx],
        }
        path = folder / name
        path.write_bytes(pickle.dumps(entry, protocol=2))
        written.append((name, hashlib.md5(path.read_bytes()).hexdigest()))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": len(chunks[0]), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    written.append(("batches.meta", hashlib.md5((folder / "batches.meta").read_bytes()).hexdigest()))
    return written


def split_validation(
    images: torch.Tensor, labels: torch.Tensor, n_val: int, *, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split off a stratified validation set of ``n_val`` examples: ``(train, val)`` pairs."""
    val_idx = stratified_subset(labels.cpu(), n_val, seed=seed)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val_idx] = False
    train_idx = torch.nonzero(mask).flatten()
    dev = images.device
    return ((images[train_idx.to(dev)], labels[train_idx.to(dev)]),
            (images[val_idx.to(dev)], labels[val_idx.to(dev)]))


if __name__ == "__main__":  # `python -m lecturelib.data`: find (or download) the data, say where
    folder = find_fashion_mnist()
    for split in ("train", "test"):
        images, labels = _load_fashion_mnist_uint8(str(folder), split)
        print(f"Fashion-MNIST {split}: {len(labels)} images, checksums verified, in {folder}")
