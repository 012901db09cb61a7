import gzip
import shutil

import numpy as np
import pytest
import torch

from lecturelib import data
from lecturelib.data import (ChecksumError, DataNotFoundError, cifar10, fashion_mnist,
                             find_fashion_mnist, split_validation, stratified_subset)

FILES = [f for pair in data._FILES.values() for f in pair]


@pytest.fixture(scope="module")
def real_folder():
    """The real files, wherever this machine has them (CI installs Debian's package)."""
    return find_fashion_mnist(download=False)


def test_fashion_mnist_shapes_types_and_normalization(real_folder):
    x, y = fashion_mnist("train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.int64
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    xt, yt = fashion_mnist("test")
    assert xt.shape == (10000, 1, 28, 28) and yt.shape == (10000,)
    # the test set is normalized with the *training* statistics, so it is only close to 0/1
    assert abs(xt.mean().item()) < 0.05 and abs(xt.std().item() - 1) < 0.05
    assert not torch.equal(x[:100], xt[:100])


def test_subset_is_stratified_seeded_and_on_device(real_folder):
    x1, y1 = fashion_mnist("train", subset=1000, seed=3, device="cpu")
    x2, y2 = fashion_mnist("train", subset=1000, seed=3)
    x3, y3 = fashion_mnist("train", subset=1000, seed=4)
    assert x1.shape == (1000, 1, 28, 28) and x1.device.type == "cpu"
    assert torch.equal(torch.bincount(y1), torch.full((10,), 100))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


def test_stratified_subset_uneven_and_errors():
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 45)
    idx = stratified_subset(labels, 30, seed=0)
    counts = torch.bincount(labels[idx], minlength=3)
    assert len(idx) == 30 and len(torch.unique(idx)) == 30
    assert counts[1] == 5 and counts.sum() == 30  # the small class gives all it has
    with pytest.raises(ValueError, match="larger than the data set"):
        stratified_subset(labels, 101)
    with pytest.raises(ValueError, match="positive int"):
        stratified_subset(labels, 0)


def test_bad_split_is_a_clear_error():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        fashion_mnist("validation")


def test_split_validation_is_disjoint_and_stratified():
    x = torch.arange(200, dtype=torch.float32).view(200, 1)
    y = torch.arange(200) % 4
    (xtr, ytr), (xv, yv) = split_validation(x, y, 40, seed=1)
    assert len(xv) == 40 and len(xtr) == 160
    assert torch.equal(torch.bincount(yv), torch.full((4,), 10))
    assert not set(xv.flatten().tolist()) & set(xtr.flatten().tolist())


def test_environment_variable_folder_comes_first(real_folder, tmp_path, monkeypatch):
    for f in FILES:
        (tmp_path / f).symlink_to(real_folder / f)
    monkeypatch.setenv(data.ENV_FASHION_MNIST_DIR, str(tmp_path))
    assert find_fashion_mnist(download=False) == tmp_path


def test_corrupted_file_fails_the_checksum(real_folder, tmp_path, monkeypatch):
    for f in FILES:
        shutil.copy(real_folder / f, tmp_path / f)
    raw = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: still a valid IDX file
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setenv(data.ENV_FASHION_MNIST_DIR, str(tmp_path))
    with pytest.raises(ChecksumError, match="checksum"):
        fashion_mnist("test")


def test_missing_data_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_FASHION_MNIST_DIR, str(tmp_path / "nothing-here"))
    monkeypatch.setenv("LECTURELIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_download_fashion_mnist", lambda: None)  # as if offline
    with pytest.raises(DataNotFoundError) as err:
        fashion_mnist("train")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert data.ENV_FASHION_MNIST_DIR in message and str(tmp_path / "cache") in message


def test_read_idx_rejects_non_idx(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04hello")
    with pytest.raises(ChecksumError, match="magic"):
        data.read_idx(bad)


# ----------------------------------------------------------------------------- CIFAR-10

@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    """A 60-image archive in CIFAR-10's real on-disk format, with torchvision told its MD5s."""
    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(60) % 10
    md5 = dict(data.write_cifar10_batches(tmp_path, images, labels))
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    return tmp_path, images, labels


def test_cifar10_reads_the_real_format(tiny_cifar):
    root, images, labels = tiny_cifar
    x, y = cifar10("train", root=root, download=False)
    assert x.shape == (50, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.as_tensor(labels[:50]))
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
    # pixel (0, 0) of image 0, channel 1, undone from the normalization, is the pixel written
    raw = torch.as_tensor(images[:50]).permute(0, 3, 1, 2).float() / 255
    back = x * raw.std(dim=(0, 2, 3), keepdim=True) + raw.mean(dim=(0, 2, 3), keepdim=True)
    assert torch.allclose(back, raw, atol=1e-5)
    xt, yt = cifar10("test", root=root, download=False)
    assert xt.shape == (10, 3, 32, 32) and torch.equal(yt, torch.as_tensor(labels[50:]))
    xs, ys = cifar10("train", root=root, download=False, subset=20)
    assert torch.equal(torch.bincount(ys), torch.full((10,), 2))


def test_cifar10_corrupted_or_missing_is_a_clear_error(tiny_cifar, tmp_path):
    root, _, _ = tiny_cifar
    with pytest.raises(DataNotFoundError, match="CIFAR-10"):
        cifar10("train", root=tmp_path / "empty", download=False)
    batch = root / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DataNotFoundError, match="corrupted"):
        cifar10("train", root=root, download=False)
