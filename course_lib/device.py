"""Choose the compute device once, and make runs repeatable.

The course runs on a laptop CPU by default. When a CUDA GPU or Apple-silicon
GPU (MPS) is present it is used, unless ``COURSE_DEVICE`` says otherwise
(for example ``COURSE_DEVICE=cpu`` to reproduce the stored outputs exactly).
"""

import os
import platform
import random

import numpy as np
import torch

from .validate import MAX_SEED, check_int


def get_device() -> torch.device:
    """The device every notebook uses: $COURSE_DEVICE, else CUDA, else MPS, else CPU."""
    wanted = os.environ.get("COURSE_DEVICE", "").strip().lower()
    if wanted:
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(
                f"COURSE_DEVICE={wanted!r} but PyTorch sees no CUDA GPU here. "
                "Unset COURSE_DEVICE (or set it to 'cpu') to run on the CPU."
            )
        if wanted == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(
                "COURSE_DEVICE='mps' but Apple's MPS backend is not available here. "
                "Unset COURSE_DEVICE (or set it to 'cpu') to run on the CPU."
            )
        try:
            return torch.device(wanted)
        except RuntimeError as err:
            raise ValueError(
                f"COURSE_DEVICE={wanted!r} is not a device name; use 'cpu', 'cuda' or 'mps'."
            ) from err
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a CPU ``torch.Generator`` seeded with ``seed``.

    Passing that generator explicitly to random functions (``torch.randn(...,
    generator=g)``) keeps a cell's result independent of what ran before it.
    """
    check_int("seed", seed, 0, MAX_SEED)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def describe_device(device: torch.device | str = "cpu") -> str:
    """The hardware behind ``device``, for provenance and bench tables: "x86_64, 2 CPU threads" or
    "x86_64, NVIDIA H200"."""
    device = torch.device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    return f"{platform.machine()}, {where}"
