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

from .captions import AttributeThresholds, caption
from .clip import CLIP, attribute_codes, clip_training_loss, words_from_codes
from .data import load_mnist
from .device import get_device, seed_everything
from .ldm import encode_latent_distribution, ldm_training_loss
from .metrics import MNISTClassifier, classifier_loss, predict
from .schedule import NoiseSchedule
from .train import diffusion_loss, train
from .unet import UNet
from .vae import VAE, AutoEncoder, ConvVAE, autoencoder_loss, latent_scaling_factor, vae_loss

# The shipped pixel-space DDPM: 0.69M parameters, ~0.4 s per batch of 64 on a 2-core CPU.
DDPM_UNET_CONFIG = dict(in_channels=1, out_channels=1, base_channels=16, channel_mults=(1, 2, 4),
                        num_res_blocks=1, attention_levels=(False, False, True))
# lr 1e-3 and a slow EMA: 8000 steps at lr 5e-4 gave good DDPM-1000 samples but a biased
# noise prediction that deterministic DDIM integrates faithfully (strokes thicken with more steps).
DDPM_TRAINING = dict(steps=12000, batch_size=64, lr=1e-3, warmup_steps=300, ema_decay=0.9995, seed=0)
# The three autoencoders of notebook 03: name -> (model class, config, training settings).
# kl_weight None means no KL term (the plain autoencoder).
AUTOENCODERS = {
    "ae2d": (AutoEncoder, dict(latent_dim=2, hidden=(400, 200)),
             dict(steps=8000, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.998, seed=0, kl_weight=None)),
    # 3000 steps gave a 10-NN accuracy of 78% on the held-out 2-D means, 8000 steps 83%.
    "vae2d": (VAE, dict(latent_dim=2, hidden=(400, 200)),
              dict(steps=8000, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.998, seed=0, kl_weight=1.0)),
    # Half the KL weight: sharper reconstructions than the full ELBO, latents still close to N(0, I).
    "vae": (ConvVAE, dict(latent_channels=4, channels=16),
            dict(steps=2500, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.998, seed=0, kl_weight=0.5)),
}
# The CLIP of notebook 04 (text encoder reused, frozen, by latent diffusion).
CLIP_CONFIG = dict(embed_dim=64, text_width=64, text_layers=3, text_heads=4, image_channels=32, image_width=128)
CLIP_TRAINING = dict(steps=3000, batch_size=256, lr=1e-3, weight_decay=0.1, warmup_steps=200, ema_decay=0.998,
                     seed=0)
# The text-conditioned UNet of latent diffusion (notebook 06) on the spatial VAE's 4 x 7 x 7 latents
# (zero-padded to 8 x 8): 16 channels at 8 x 8, 32 at 4 x 4; cross-attention to the CLIP text tokens
# at every level, self-attention only at 4 x 4 and in the middle (at 8 x 8 it cost most of the time).
LDM_UNET_CONFIG = dict(in_channels=4, out_channels=4, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                       attention_levels=(True, True), self_attention_levels=(False, True), num_heads=2,
                       context_dim=CLIP_CONFIG["text_width"], pad_to_multiple=True)
LDM_TRAINING = dict(steps=10000, batch_size=128, lr=1e-3, warmup_steps=300, ema_decay=0.999, uncond_prob=0.1,
                    seed=0)
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


def train_autoencoder(name: str, run_dir: str | Path | None = None, progress: bool = True, **overrides):
    """Train one of ``AUTOENCODERS`` ("ae2d", "vae2d", "vae") on the training pool; returns (EMA model, info).

    For the spatial "vae" the latent scaling factor is then measured on the training pool
    and stored in the model (``latent_scale``), as Stable Diffusion did for its 0.18215.
    """
    if name not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder {name!r}; choose one of {sorted(AUTOENCODERS)}")
    model_class, config, training = AUTOENCODERS[name]
    settings = {**training, **overrides}
    seed_everything(settings["seed"])
    device = get_device()
    dataset = load_mnist("train")
    loss_fn = autoencoder_loss if settings["kl_weight"] is None else vae_loss(settings["kl_weight"])
    run_dir = Path(run_dir or f"runs/{name}")
    start = time.time()
    result = train(model_class(**config), loss_fn, dataset, steps=settings["steps"],
                   batch_size=settings["batch_size"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                   ema_decay=settings["ema_decay"], seed=settings["seed"], checkpoint_path=run_dir / "state.pt",
                   checkpoint_every=500, device=device, progress=progress, desc=name)
    model = result.ema_model.cpu()
    info = {**settings, "steps": result.steps_done,
            "train_seconds": round(_accumulated_seconds(run_dir, time.time() - start)),
            "hardware": _hardware(device), "data": dataset.source,
            "final_loss_avg100": round(sum(result.losses[-100:]) / len(result.losses[-100:]), 3),
            "script": f"scripts/train_vae.py --model {name}"}
    if isinstance(model, ConvVAE):
        scale = latent_scaling_factor(model, dataset.images, torch.Generator().manual_seed(settings["seed"]))
        model.latent_scale.fill_(scale)
        info["scaling_factor"] = round(scale, 5)
    return model, info


def train_clip(run_dir: str | Path = "runs/clip", progress: bool = True, **overrides):
    """Train the course's CLIP on captioned digits of the training pool; returns (EMA model, info dict).

    The attribute thresholds (per-class terciles) are fitted on the training pool and saved in
    ``info["thresholds"]``, so captions and attribute checks can be reproduced from the checkpoint.
    """
    settings = {**CLIP_TRAINING, **overrides}
    seed_everything(settings["seed"])
    device = get_device()
    dataset = load_mnist("train")
    thresholds = AttributeThresholds.fit(dataset.images, dataset.labels)
    codes = attribute_codes(thresholds, dataset.images, dataset.labels)
    start = time.time()
    result = train(CLIP(**CLIP_CONFIG), clip_training_loss, (dataset.images, dataset.labels, codes),
                   steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                   weight_decay=settings["weight_decay"], warmup_steps=settings["warmup_steps"],
                   ema_decay=settings["ema_decay"], seed=settings["seed"], checkpoint_path=Path(run_dir) / "state.pt",
                   checkpoint_every=250, device=device, progress=progress, desc="CLIP")
    info = {**settings, "steps": result.steps_done,
            "train_seconds": round(_accumulated_seconds(run_dir, time.time() - start)),
            "hardware": _hardware(device), "data": dataset.source,
            "thresholds": {"low": thresholds.low, "high": thresholds.high},
            "final_loss_avg100": round(sum(result.losses[-100:]) / len(result.losses[-100:]), 4),
            "script": "scripts/train_clip.py"}
    return result.ema_model.cpu(), info


def ldm_caption(digit: int, codes: torch.Tensor, generator: torch.Generator) -> str:
    """A fresh caption from a digit's attribute codes. Unlike CLIP's training, latent diffusion sees every
    attribute-digit pair (the held-out "thin eight" was chapter 04's experiment), so every prompt is taught."""
    return caption(digit, words_from_codes(codes), generator, training=False)


def train_ldm(run_dir: str | Path = "runs/ldm", progress: bool = True, **overrides):
    """Train the text-conditioned latent-diffusion UNet; returns (TrainResult, info dict).

    The shipped VAE and CLIP text encoder are loaded and frozen. The training pool is encoded
    once into latent Gaussians; each step draws latents from them, writes fresh captions (the
    same generator as CLIP's, with the CLIP's attribute thresholds) and drops 10% of them
    to the empty text for classifier-free guidance.
    """
    from .pipelines import load

    settings = {**LDM_TRAINING, **overrides}
    seed_everything(settings["seed"])
    device = get_device()
    vae, clip = load("vae", device="cpu"), load("clip", device="cpu")
    dataset = load_mnist("train")
    codes = attribute_codes(clip.thresholds, dataset.images, dataset.labels)
    mean, std = encode_latent_distribution(vae, dataset.images)
    loss_fn = ldm_training_loss(clip.text_encoder.to(device), clip.tokenizer, NoiseSchedule("linear"),
                                vae.scaling_factor, ldm_caption, settings["uncond_prob"])
    start = time.time()
    result = train(UNet(**LDM_UNET_CONFIG), loss_fn, (mean, std, dataset.labels, codes), steps=settings["steps"],
                   batch_size=settings["batch_size"], lr=settings["lr"], warmup_steps=settings["warmup_steps"],
                   ema_decay=settings["ema_decay"], seed=settings["seed"], checkpoint_path=Path(run_dir) / "state.pt",
                   checkpoint_every=250, device=device, progress=progress, desc="latent diffusion")
    info = {**settings, "steps": result.steps_done,
            "train_seconds": round(_accumulated_seconds(run_dir, time.time() - start)),
            "hardware": _hardware(device), "data": dataset.source, "schedule": "linear, T=1000",
            "vae_scaling_factor": round(vae.scaling_factor, 5),
            "final_loss_avg100": round(sum(result.losses[-100:]) / len(result.losses[-100:]), 5),
            "script": "scripts/train_ldm.py"}
    return result, info
