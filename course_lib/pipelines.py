"""One public way to use each shipped model, named like Hugging Face ``diffusers`` pipelines.

    >>> from course_lib import pipelines
    >>> pipe = pipelines.load("ddpm")
    >>> images = pipe(batch_size=16, num_inference_steps=50, sampler="ddim", seed=0)
    >>> images.shape, images.min() >= 0, images.max() <= 1
    (torch.Size([16, 1, 28, 28]), tensor(True), tensor(True))

``load`` reads the verified weights; ``assemble`` turns weights into the object a notebook
uses, and ``course_lib.recipes`` calls the same ``assemble`` on a model it has just trained,
so "train it yourself" gives exactly what ``load`` gives.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .captions import AttributeThresholds
from .clip import CLIP
from .ddpm import DDPMPipeline
from .device import get_device
from .flow import FlowMatchingPipeline
from .ldm import LatentDiffusionPipeline
from .metrics import MNISTClassifier
from .pretrained import load_model
from .unet import UNet
from .vae import VAE, AutoEncoder, ConvVAE

# name -> the network class its checkpoint holds
MODELS = {"classifier": MNISTClassifier, "ddpm": UNet, "flow": UNet, "reflow": UNet, "ae2d": AutoEncoder, "vae2d": VAE, "vae": ConvVAE,
          "clip": CLIP, "ldm": UNet}


def load(name: str, device: torch.device | str | None = None):
    """Load a shipped model by name, ready to use, on ``device`` (default: ``course_lib.device.get_device()``).

    ``"ddpm"``: a ``DDPMPipeline``, ``pipe(batch_size, num_inference_steps, sampler, seed)`` -> digits.
    ``"flow"``: a ``FlowMatchingPipeline`` (notebook 07), ``pipe(batch_size, num_inference_steps=8,
    sampler="euler", seed=0)`` -> digits; the same U-Net as the DDPM, trained by flow matching.
    ``"reflow"``: the same, after one round of reflow (fine-tuned on its own noise-digit pairs): straighter paths.
    ``"vae"``: the spatial ``ConvVAE``: ``vae.encode(x)`` (x (B, 1, 28, 28) in [0, 1]) gives the latent
    distribution (``.mean``, ``.logvar``, ``.sample()``), each (B, 4, 7, 7); ``vae.decode(z)`` gives
    digits back in [0, 1]; ``vae.scaling_factor`` turns latents into unit-variance ones for diffusion.
    ``"ae2d"``, ``"vae2d"``: notebook 03's autoencoder and VAE with a 2-D code.
    ``"clip"``: the ``CLIP`` of notebook 04: ``clip.encode_text(list_of_str)`` and ``clip.encode_image(x)``
    (x (B, 1, 28, 28) in [0, 1]) give L2-normalised embeddings (B, 64); ``clip.thresholds`` are the
    attribute thresholds its captions were made with.
    ``"ldm"``: the ``LatentDiffusionPipeline`` of notebook 06, ``pipe(prompt, num_inference_steps=50,
    guidance_scale=6.0, guidance_interval=(0.0, 0.2), condition_annealing=(0.4, 0.9), seed=0, negative_prompt=None,
    image=None, strength=0.8)`` (the defaults: ``course_lib.ldm.DEFAULT_GUIDANCE_SCALE``, ``DEFAULT_GUIDANCE_INTERVAL`` and
    ``DEFAULT_CONDITION_ANNEALING``) -> digits (B, 1, 28, 28)
    in [0, 1]; it holds the VAE, the CLIP text encoder and tokenizer, and the text-conditioned UNet.
    ``"classifier"``: the ``MNISTClassifier`` that judges generated digits.
    """
    if name not in MODELS:
        raise ValueError(f"unknown pipeline {name!r}; available: {', '.join(repr(n) for n in MODELS)}")
    model, info = load_model(name, MODELS[name])
    return assemble(name, model, info, device)


def assemble(name: str, model: nn.Module, info: dict, device: torch.device | str | None = None):
    """The ready-to-use object for network ``model`` of shipped model ``name``, with its training ``info``.

    The LDM brings the shipped VAE and CLIP it was trained with.
    """
    device = torch.device(device) if device is not None else get_device()
    model = model.to(device).eval()
    if name == "ddpm":
        return DDPMPipeline(model, prediction_type=info.get("prediction_type", "epsilon"), info=info)
    if name in ("flow", "reflow"):
        return FlowMatchingPipeline(model, info=info)
    if name == "ldm":
        clip = load("clip", device)
        pipe = LatentDiffusionPipeline(model, load("vae", device), clip.text_encoder, clip.tokenizer, info=info)
        pipe.thresholds = clip.thresholds      # what "thick" and "thin" meant in its training captions
        return pipe
    model.info = info
    if name == "clip":
        model.thresholds = AttributeThresholds(**info["thresholds"])
    return model


def network(ready) -> nn.Module:
    """The trained network inside what ``load``/``assemble`` return (a pipeline's UNet, else the model itself)."""
    return ready.unet if isinstance(ready, (DDPMPipeline, FlowMatchingPipeline, LatentDiffusionPipeline)) else ready
