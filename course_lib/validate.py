"""The ground floor: argument checks and batching that every other module uses.

A learner's typo gets one sentence that names the argument and says what it should be,
not a traceback from deep inside PyTorch:

    >>> check_int("num_inference_steps", 0, 1, 1000)
    ValueError: num_inference_steps must be an integer from 1 to 1000, got 0

and work on many digits runs in batches through one helper:

    >>> features = batched(classifier.features, images, batch_size=1000)   # (N, 128)
"""

from __future__ import annotations

import numbers

import torch

MAX_SEED = 2**63 - 1   # the largest seed torch.Generator.manual_seed takes
RANGE_TOLERANCE = 1e-3  # how far outside [0, 1] resampled pixels may stray by rounding


def check_int(name: str, value, low: int, high: int) -> None:
    """Refuse anything but an integer in [low, high], with a sentence that names the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def check_float(name: str, value, low: float, high: float) -> None:
    """Refuse anything but a real number in [low, high] (NaN included), with a sentence naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def check_interval(name: str, interval) -> tuple[float, float]:
    """Refuse anything but a pair (low, high) of fractions of the noise timeline, 0 <= low <= high <= 1."""
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        raise ValueError(f"{name} must be a pair (low, high) of fractions of the noise timeline, e.g. "
                         f"(0.2, 0.8); got {interval!r}")
    low, high = interval
    check_float(f"{name} low", low, 0.0, 1.0)
    check_float(f"{name} high", high, 0.0, 1.0)
    if low > high:
        raise ValueError(f"{name} low ({low}) must not exceed high ({high})")
    return float(low), float(high)


def check_digits(images, name: str = "images", tolerance: float = 0.0) -> None:
    """Refuse anything but a batch of digits: a float tensor (B, 1, 28, 28) with values in [0, 1].

    ``tolerance``: how far outside [0, 1] values may stray (``RANGE_TOLERANCE`` where the input comes
    from interpolation or resampling, which round a little past the ends).
    The message names the argument and shows the usual fixes (a single digit, images in [-1, 1]).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        fix = {(28, 28): "; a single digit x of shape (28, 28) becomes x[None, None]",
               (1, 28, 28): "; a single digit x of shape (1, 28, 28) becomes x[None]"}.get(shape, "")
        if isinstance(images, torch.Tensor) and images.ndim == 3 and tuple(images.shape[1:]) == (28, 28) and not fix:
            fix = "; digits x of shape (B, 28, 28) become x[:, None]"
        raise ValueError(f"{name} must be digits as a (B, 1, 28, 28) tensor in [0, 1], got {shape}{fix}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {images.dtype}; "
                         "for bytes 0..255 pass x.float() / 255")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < -tolerance
                           or images.max() > 1 + tolerance):
        low, high = images.min().item(), images.max().item()
        raise ValueError(f"{name} values must be in [0, 1], got [{low:.3g}, {high:.3g}]; "
                         "for digits in [-1, 1] pass (x + 1) / 2")


def batched(fn, inputs: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``fn`` applied to ``inputs`` in chunks of ``batch_size`` along the first dimension, results concatenated.

    For work on thousands of digits that would not fit in memory at once; ``fn`` must map a
    (b, ...) tensor to a (b, ...) tensor.
    """
    check_int("batch_size", batch_size, 1, 10**9)
    return torch.cat([fn(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)])
