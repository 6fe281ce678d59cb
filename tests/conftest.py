"""Shared fixtures: synthetic MNIST files in the real IDX format, and the real data if present."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from course_lib import data


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` (uint8, (N, 28, 28) or (N,)) as an IDX file, the MNIST format."""
    magic = 2051 if array.ndim == 3 else 2049
    raw = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def fake_mnist(root: Path, which: str, n: int, seed: int = 0, compress: bool = True):
    """Synthetic digits: image i is filled with value (i % 256), label i % 10. Returns (images, labels)."""
    images = (np.arange(n, dtype=np.int64) % 256).astype(np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    stems = data._FILES[which]
    write_idx(root / "MNIST" / "raw" / stems[0], images, compress)
    write_idx(root / "MNIST" / "raw" / stems[1], labels, compress)
    return images, labels


@pytest.fixture(autouse=True)
def _fresh_data_cache(monkeypatch):
    """Each test sees its own data sources: no cached pools, no env vars leaking in."""
    data._load_pools.cache_clear()
    yield
    data._load_pools.cache_clear()


@pytest.fixture
def real_mnist_root():
    """The folder with the genuine MNIST test files (CI: ../shared/data), or skip."""
    root = os.environ.get(data.ENV_ROOT)
    if not root or data._find(Path(root), "t10k-images-idx3-ubyte") is None:
        message = f"${data.ENV_ROOT} does not point at the genuine MNIST test files"
        if os.environ.get("CI") == "true":  # CI always has them (../shared/data): never skip there
            pytest.fail(message)
        pytest.skip(message)
    return Path(root)
