"""One public way to use each shipped model, named like Hugging Face ``diffusers`` pipelines.

    >>> from course_lib import pipelines
    >>> pipe = pipelines.load("ddpm")
    >>> images = pipe(batch_size=16, num_inference_steps=50, sampler="ddim", seed=0)
    >>> images.shape, images.min() >= 0, images.max() <= 1
    (torch.Size([16, 1, 28, 28]), tensor(True), tensor(True))
"""

from __future__ import annotations

import numbers

import torch
from tqdm.auto import tqdm

from .data import denormalize
from .samplers import make_scheduler
from .unet import UNet

MAX_SEED = 2**63 - 1


class DDPMPipeline:
    """Unconditional digit generation: noise -> UNet + scheduler -> digits in [0, 1].

    ``unet`` predicts the noise in x_t; ``sample_shape`` is one image's (C, H, W).
    """

    def __init__(self, unet: UNet, sample_shape=(1, 28, 28), num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", info: dict | None = None):
        self.unet = unet.eval()
        self.sample_shape = tuple(sample_shape)
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.info = info or {}

    @torch.no_grad()
    def __call__(self, batch_size: int = 16, num_inference_steps: int = 1000, sampler: str = "ddpm",
                 seed: int = 0, eta: float = 0.0, use_clipped_model_output: bool = True, callback=None,
                 progress: bool = True) -> torch.Tensor:
        """Generate ``batch_size`` digits; returns (batch_size, 1, 28, 28) in [0, 1] on the CPU.

        sampler: "ddpm" (ancestral, best with many steps) or "ddim" (deterministic for eta=0,
        good with 20-100 steps). seed fixes the starting noise and every random step.
        eta and use_clipped_model_output: see ``DDIMScheduler.step`` (DDIM only).
        callback(i, t, sample, pred_original_sample) is called after each step, for snapshots.
        """
        check_int("batch_size", batch_size, 1, 10_000)
        check_int("num_inference_steps", num_inference_steps, 1, self.num_train_timesteps)
        check_int("seed", seed, 0, MAX_SEED)
        scheduler = make_scheduler(sampler, num_train_timesteps=self.num_train_timesteps,
                                   beta_schedule=self.beta_schedule)
        if sampler == "ddpm" and (eta != 0.0 or not use_clipped_model_output):
            raise ValueError("eta and use_clipped_model_output only apply to sampler='ddim'")
        scheduler.set_timesteps(num_inference_steps)
        device = next(self.unet.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        sample = torch.randn((batch_size, *self.sample_shape), generator=generator).to(device)
        extra = {"eta": eta, "use_clipped_model_output": use_clipped_model_output} if sampler == "ddim" else {}
        for i, t in enumerate(tqdm(scheduler.timesteps, desc=f"{sampler} sampling", disable=not progress,
                                   leave=False)):
            noise_pred = self.unet(sample, torch.full((batch_size,), int(t), device=device))
            out = scheduler.step(noise_pred, int(t), sample, generator=generator, **extra)
            sample = out.prev_sample
            if callback is not None:
                callback(i, int(t), sample, out.pred_original_sample)
        return denormalize(sample).cpu()


def check_int(name: str, value, low: int, high: int) -> None:
    """Refuse anything but an integer in [low, high], with a sentence that names the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def check_float(name: str, value, low: float, high: float) -> None:
    """Refuse anything but a real number in [low, high] (NaN included), with a sentence naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def load(name: str, device: torch.device | str | None = None):
    """Load a shipped model by name.

    ``"ddpm"``: a ``DDPMPipeline``, ``pipe(batch_size, num_inference_steps, sampler, seed)`` -> digits.
    ``"vae"``: the spatial ``ConvVAE``: ``vae.encode(x)`` (x (B, 1, 28, 28) in [0, 1]) gives the latent
    distribution (``.mean``, ``.logvar``, ``.sample()``), each (B, 4, 7, 7); ``vae.decode(z)`` gives
    digits back in [0, 1]; ``vae.scaling_factor`` turns latents into unit-variance ones for diffusion.
    ``"clip"``: the ``CLIP`` of notebook 04: ``clip.encode_text(list_of_str)`` and ``clip.encode_image(x)``
    (x (B, 1, 28, 28) in [0, 1]) give L2-normalised embeddings (B, 64); ``clip.thresholds`` are the
    attribute thresholds its captions were made with.
    ``"ldm"``: the ``LatentDiffusionPipeline`` of notebook 06, ``pipe(prompt, num_inference_steps=50,
    guidance_scale=3.0, seed=0, negative_prompt=None, image=None, strength=0.8)`` -> digits (B, 1, 28, 28)
    in [0, 1]; it holds the VAE, the CLIP text encoder and tokenizer, and the text-conditioned UNet.
    """
    from .device import get_device
    from .pretrained import load_model

    device = torch.device(device) if device is not None else get_device()
    if name == "ddpm":
        unet, info = load_model("ddpm", UNet)
        return DDPMPipeline(unet.to(device), info=info)
    if name == "vae":
        from .vae import ConvVAE

        vae, info = load_model("vae", ConvVAE)
        vae.info = info
        return vae.to(device)
    if name == "clip":
        from .captions import AttributeThresholds
        from .clip import CLIP

        clip, info = load_model("clip", CLIP)
        clip.info = info
        clip.thresholds = AttributeThresholds(**info["thresholds"])
        return clip.to(device)
    if name == "ldm":
        from .ldm import LatentDiffusionPipeline

        unet, info = load_model("ldm", UNet)
        clip = load("clip", device)
        pipe = LatentDiffusionPipeline(unet.to(device), load("vae", device), clip.text_encoder, clip.tokenizer,
                                       info=info)
        pipe.thresholds = clip.thresholds      # what "thick" and "thin" meant in its training captions
        return pipe
    raise ValueError(f"unknown pipeline {name!r}; available: 'ddpm', 'vae', 'clip', 'ldm'")
