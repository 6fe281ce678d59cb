"""One training loop for every model in the course.

Each model brings only its *loss function* ``loss_fn(model, batch, generator) -> scalar``;
the loop does the rest, the same way every time:

* random mini-batches drawn from a seeded generator (same seed, same run),
* AdamW with a short linear warm-up, then a cosine decay to 10% of the learning rate,
* an **EMA** (exponential moving average) copy of the weights, which samples better
  than the raw weights because it averages out the last steps' noise,
* a tqdm progress bar with the running loss,
* checkpoints that can be resumed exactly (weights, EMA, optimizer, step, both RNG states),
  loaded with ``torch.load(weights_only=True)`` so no code is unpickled.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .validate import check_int

PRECISIONS = ("float32", "bfloat16")


class EMA:
    """Exponential moving average of a model's parameters: ema = decay * ema + (1 - decay) * weights.

    ``ema.model`` is a frozen copy to evaluate or sample with. Buffers are copied as they are.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # one fused call for all parameters: on a GPU a small U-Net's step is bound by kernel launches
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1.0 - self.decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


@dataclass
class TrainResult:
    """What ``train`` returns: the model, its EMA copy, and the loss of every step."""

    model: nn.Module
    ema_model: nn.Module
    losses: list[float] = field(default_factory=list)
    steps_done: int = 0
    seconds: float = 0.0          # wall time of the steps done, summed over every session that resumed the run


def train(model: nn.Module, loss_fn, dataset, *, steps: int, batch_size: int = 64, lr: float = 1e-3,
          weight_decay: float = 0.0, warmup_steps: int = 100, ema_decay: float = 0.999, seed: int = 0,
          checkpoint_path: str | os.PathLike | None = None, checkpoint_every: int = 500,
          resume: bool = True, device: torch.device | str = "cpu", progress: bool = True,
          desc: str = "training", precision: str = "float32") -> TrainResult:
    """Train ``model`` for ``steps`` optimizer steps on random mini-batches of ``dataset``.

    dataset: a ``Digits`` (or anything indexable by a LongTensor of indices that returns a
    batch), or a tuple of tensors with the same first dimension. ``loss_fn(model, batch, generator)``
    gets the batch on ``device``. With ``checkpoint_path``, state is saved every
    ``checkpoint_every`` steps and at the end; an existing checkpoint is resumed when
    ``resume`` is True, and never overwritten by a fresh run otherwise.
    precision: "float32", or "bfloat16" to run the forward pass under autocast (the weights, the optimizer and
    the EMA stay float32): about 1.6x faster on a CPU with AVX-512 BF16 and on recent GPUs.
    """
    check_int("steps", steps, 1, 10**9)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    check_int("batch_size", batch_size, 1, 10**9)
    device = torch.device(device)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_warmup_cosine(s, warmup_steps, steps))
    ema = EMA(model, ema_decay)
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult(model, ema.model)

    path = Path(checkpoint_path) if checkpoint_path else None
    if path and path.exists():
        if not resume:
            raise FileExistsError(f"{path} already exists; pass resume=True to continue it, "
                                  "or choose another checkpoint_path (it is not overwritten).")
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])     # dropout draws from the global generator
        result.losses = state["losses"].tolist()
        result.steps_done = int(state["step"])
        result.seconds = float(state.get("seconds", 0.0))   # kept in the state, so a killed session's work counts

    n = len(dataset[0]) if isinstance(dataset, (tuple, list)) else len(dataset)
    session_start, seconds_before = time.perf_counter(), result.seconds
    bar = tqdm(range(result.steps_done, steps), desc=desc, initial=result.steps_done, total=steps,
               disable=not progress)
    pending = []     # this stretch's losses, still on the device: reading one waits for the GPU (see _record)
    for step in bar:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        batch = tuple(d[idx] for d in dataset) if isinstance(dataset, (tuple, list)) else dataset[idx]
        batch = _to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            loss = loss_fn(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        ema.update(model)
        pending.append(loss.detach())
        result.steps_done = step + 1
        last = result.steps_done == steps
        at_checkpoint = path and (result.steps_done % checkpoint_every == 0 or last)
        if step % 10 == 0 or at_checkpoint or last:
            _record(result, pending, lr)
            bar.set_postfix(loss=f"{sum(result.losses[-50:]) / len(result.losses[-50:]):.4f}")
        result.seconds = seconds_before + time.perf_counter() - session_start
        if at_checkpoint:
            save_checkpoint(path, model=model.state_dict(), ema=ema.model.state_dict(),
                            optimizer=optimizer.state_dict(), lr_scheduler=scheduler.state_dict(),
                            generator=generator.get_state(), torch_rng=torch.get_rng_state(),
                            losses=torch.tensor(result.losses),
                            step=result.steps_done, seconds=result.seconds)
    model.eval()
    return result


def seconds_per_step(model: nn.Module, loss_fn, batch, steps: int = 10, warmup: int = 3) -> float:
    """Wall-clock seconds of one training step (loss, backward, AdamW) on one repeated ``batch``, the mean of
    ``steps`` after ``warmup`` untimed ones: what a loss costs, compared on the same machine in the same run.
    Trains ``model`` a little, so pass a fresh copy, not a model you want to keep."""
    check_int("steps", steps, 1, 10_000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = loss_fn(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def _record(result: TrainResult, pending: list, lr: float) -> None:
    """Move the losses of the last few steps from the device into ``result.losses`` (emptying ``pending``) and
    stop on a non-finite one. Done every 10 steps, not every step: reading a GPU number makes the CPU wait
    for the GPU, and a small U-Net's step is over before the CPU can queue the next one."""
    if not pending:
        return
    values = torch.stack(pending).float().cpu().tolist()
    first = len(result.losses)
    result.losses.extend(values)
    pending.clear()
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at step {first + i}: lower lr (now {lr}) "
                                     "or check the inputs' range")


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    return type(batch)(_to_device(b, device) for b in batch)


def save_checkpoint(path: str | os.PathLike, **state) -> None:
    """Save a training state atomically (write a temporary file, then rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a training state saved by ``save_checkpoint`` without unpickling code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- truncated zip, wrong file, tampered pickle: all the same to a learner
        raise RuntimeError(f"{path} is not a readable training checkpoint ({type(err).__name__}: {err}). "
                           "Delete it to start training afresh.") from err


def lr_warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0.1 at ``total``."""
    if step < warmup:  # small steps while Adam's statistics are still guesses
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
