"""The recipes that produce the shipped checkpoints: model size, data, and training settings.

``scripts/train_*.py`` are thin command lines around these functions, and a
notebook's "train from scratch" switch calls the same functions, so there is one
definition of how each shipped model is made.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from .data import load_mnist
from .device import get_device, seed_everything
from .metrics import MNISTClassifier, classifier_loss, predict
from .schedule import NoiseSchedule
from .train import diffusion_loss, train
from .unet import UNet

# The shipped pixel-space DDPM: 0.69M parameters, ~0.4 s per batch of 64 on a 2-core CPU.
DDPM_UNET_CONFIG = dict(in_channels=1, out_channels=1, base_channels=16, channel_mults=(1, 2, 4),
                        num_res_blocks=1, attention_levels=(False, False, True))
DDPM_TRAINING = dict(steps=8000, batch_size=64, lr=5e-4, warmup_steps=200, ema_decay=0.999, seed=0)
CLASSIFIER_TRAINING = dict(steps=3000, batch_size=128, lr=2e-3, weight_decay=5e-4, warmup_steps=100,
                           ema_decay=0.995, seed=0)


def _hardware(device) -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} CPU threads, device {device}"


def _accumulated_seconds(run_dir: Path, seconds: float) -> float:
    """Wall time summed over every session that worked on this run (runs can be resumed)."""
    path = Path(run_dir) / "timing.json"
    total = (json.loads(path.read_text())["seconds"] if path.exists() else 0.0) + seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seconds": total}))
    return total


def train_ddpm(run_dir: str | Path = "runs/ddpm", progress: bool = True, **overrides):
    """Train the course's DDPM on the training pool; returns (TrainResult, info dict).

    overrides: any key of ``DDPM_TRAINING`` (steps, batch_size, lr, ...).
    """
    settings = {**DDPM_TRAINING, **overrides}
    seed_everything(settings["seed"])
    device = get_device()
    dataset = load_mnist("train")
    start = time.time()
    result = train(UNet(**DDPM_UNET_CONFIG), diffusion_loss(NoiseSchedule("linear")), dataset,
                   steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                   warmup_steps=settings["warmup_steps"], ema_decay=settings["ema_decay"], seed=settings["seed"],
                   checkpoint_path=Path(run_dir) / "state.pt", checkpoint_every=250, device=device,
                   progress=progress, desc="DDPM")
    info = {**settings, "steps": result.steps_done, "train_seconds": round(_accumulated_seconds(run_dir, time.time() - start)),
            "hardware": _hardware(device), "data": dataset.source, "schedule": "linear, T=1000",
            "final_loss_avg100": round(sum(result.losses[-100:]) / len(result.losses[-100:]), 5),
            "script": "scripts/train_ddpm.py"}
    return result, info


def train_classifier(run_dir: str | Path = "runs/classifier", progress: bool = True, **overrides):
    """Train the course's MNIST classifier on the training pool; returns (EMA model, info dict)."""
    settings = {**CLASSIFIER_TRAINING, **overrides}
    seed_everything(settings["seed"])
    device = get_device()
    train_set, heldout = load_mnist("train"), load_mnist("test")
    start = time.time()
    result = train(MNISTClassifier(), classifier_loss, train_set, steps=settings["steps"],
                   batch_size=settings["batch_size"], lr=settings["lr"], weight_decay=settings["weight_decay"],
                   warmup_steps=settings["warmup_steps"], ema_decay=settings["ema_decay"], seed=settings["seed"],
                   checkpoint_path=Path(run_dir) / "state.pt", checkpoint_every=500, device=device,
                   progress=progress, desc="classifier")
    classifier = result.ema_model.cpu()
    accuracy = (predict(classifier, heldout.images) == heldout.labels).float().mean().item()
    info = {**settings, "steps": result.steps_done,
            "train_seconds": round(_accumulated_seconds(run_dir, time.time() - start)),
            "hardware": _hardware(device), "data": train_set.source, "heldout_accuracy": round(accuracy, 5),
            "script": "scripts/train_classifier.py"}
    return classifier, info
