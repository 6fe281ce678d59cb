"""Autoencoders: a plain one (points), a VAE (distributions), and a convolutional VAE with a spatial latent.

An **autoencoder** squeezes a digit through a narrow code and rebuilds it. It only learns
to decode the points its encoder produces, so a code *between* two digits' codes can
decode to nothing in particular: the space has holes.

A **variational autoencoder** (Kingma & Welling, 2014) encodes each digit to a whole
distribution, a Gaussian N(mean, exp(logvar)), decodes a *sample* of it, and pays a
KL-divergence penalty for straying from N(0, I). Training then has to make every
neighbourhood of the latent space decode to something digit-like. The loss is the
negative ELBO (evidence lower bound), in nats per image:

    -ELBO = reconstruction (-log p(x | z), here Bernoulli: binary cross-entropy summed over pixels)
            + kl_weight * KL(N(mean, var) || N(0, I))        (kl_weight = 1 for the true ELBO)

Shapes (x always (B, 1, 28, 28) in [0, 1]):

    AutoEncoder(latent_dim=2)       x -> z (B, 2)        -> x_hat
    VAE(latent_dim=2)               x -> mean, logvar (B, 2)        -> z -> x_hat
    ConvVAE(latent_channels=4)      x -> mean, logvar (B, 4, 7, 7)  -> z -> x_hat

``ConvVAE`` is the course's "Stable Diffusion VAE": 8x fewer pixels per side there
(3 x 512 x 512 -> 4 x 64 x 64, 48x fewer numbers), 4x fewer per side here
(1 x 28 x 28 -> 4 x 7 x 7, 4x fewer numbers). Latent diffusion runs on its latents.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .validate import RANGE_TOLERANCE, batched, check_digits


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample z = mean + std * eps with eps ~ N(0, I): random, yet differentiable in mean and logvar.

    Sampling z ~ N(mean, std^2) directly would give gradients nothing to flow through; moving the
    randomness into eps (which does not depend on the network) is the reparameterisation trick.
    """
    std = torch.exp(0.5 * logvar)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + std * eps


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) per image, in nats: (B, ...) -> (B,).

    Closed form for Gaussians: 0.5 * sum(mean^2 + var - 1 - log var). It is 0 exactly when
    mean = 0 and var = 1: the price of encoding information is moving away from the prior.
    """
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def reconstruction_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """-log p(x | z) per image in nats under independent Bernoulli pixels: (B, 1, 28, 28) x2 -> (B,)."""
    return F.binary_cross_entropy_with_logits(logits, images, reduction="none").flatten(1).sum(1)


class DiagonalGaussian:
    """The encoder's answer for a batch: N(mean, exp(logvar)) per latent number (like diffusers' ``latent_dist``)."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean, self.logvar = mean, logvar.clamp(-30.0, 20.0)   # clamp: exp() stays finite
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return reparameterize(self.mean, self.logvar, generator)

    def kl(self) -> torch.Tensor:
        return kl_divergence(self.mean, self.logvar)


def _mlp(sizes) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class AutoEncoder(nn.Module):
    """A plain MLP autoencoder: x (B, 1, 28, 28) -> z (B, latent_dim) -> logits (B, 1, 28, 28).

    Trained on reconstruction alone, so it places each digit at one point and says
    nothing about the space between points.
    """

    encoder_outputs = 1   # numbers per latent dimension the encoder produces

    def __init__(self, latent_dim: int = 2, hidden: tuple[int, ...] = (400, 200)):
        super().__init__()
        self.config = dict(latent_dim=latent_dim, hidden=list(hidden))
        self.latent_dim = latent_dim
        self.encoder = _mlp([784, *hidden, self.encoder_outputs * latent_dim])
        self.decoder = _mlp([latent_dim, *reversed(hidden), 784])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_digits(x, "x", RANGE_TOLERANCE)
        return self.encoder(x.flatten(1))

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z).view(-1, 1, 28, 28)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Returns (logits of x_hat, z)."""
        z = self.encode(x)
        return self.decode_logits(z), z


class VAE(AutoEncoder):
    """An MLP VAE: x -> (mean, logvar) each (B, latent_dim) -> sampled z -> logits (B, 1, 28, 28)."""

    encoder_outputs = 2   # mean and logvar side by side

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        check_digits(x, "x", RANGE_TOLERANCE)
        mean, logvar = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Returns (logits of x_hat, the latent distribution)."""
        dist = self.encode(x)
        return self.decode_logits(dist.sample(generator)), dist


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with GroupNorm and SiLU plus a residual path; (B, C, H, W) -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                   nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.block(x)


class ConvVAE(nn.Module):
    """A convolutional VAE with a spatial latent, the shape latent diffusion works in.

    encode: x (B, 1, 28, 28) -> N(mean, var) with mean, logvar (B, latent_channels, 7, 7)
    decode: z (B, latent_channels, 7, 7) -> logits (B, 1, 28, 28)
    Two stride-2 convolutions go down 28 -> 14 -> 7, two upsamplings come back.
    """

    def __init__(self, latent_channels: int = 4, channels: int = 16):
        super().__init__()
        self.config = dict(latent_channels=latent_channels, channels=channels)
        self.latent_channels = latent_channels
        # Measured after training (``latent_scaling_factor``) and saved with the weights.
        self.register_buffer("latent_scale", torch.tensor(1.0))
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), _ResBlock(c),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _ResBlock(2 * c),           # 14 x 14
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), _ResBlock(2 * c),       # 7 x 7
            nn.GroupNorm(8, 2 * c), nn.SiLU(), nn.Conv2d(2 * c, 2 * latent_channels, 3, padding=1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * c, 3, padding=1), _ResBlock(2 * c),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, 2 * c, 3, padding=1), _ResBlock(2 * c),  # 14
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * c, c, 3, padding=1), _ResBlock(c),          # 28
            nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    @property
    def scaling_factor(self) -> float:
        """Multiply latents by this before diffusion (and divide before decoding): unit variance."""
        return float(self.latent_scale)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        check_digits(x, "x", RANGE_TOLERANCE)
        mean, logvar = self.encoder(x * 2 - 1).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or tuple(z.shape[1:]) != (self.latent_channels, 7, 7):
            raise ValueError(f"z must be latents of shape (B, {self.latent_channels}, 7, 7), got {tuple(z.shape)}")
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_channels, 7, 7) -> images (B, 1, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        dist = self.encode(x)
        return self.decode_logits(dist.sample(generator)), dist


def autoencoder_loss(model, batch, generator):
    """Reconstruction only, nats per image, for ``train``: batch = (images in [0, 1], labels)."""
    images = batch[0]
    logits, _ = model(images)
    return reconstruction_nll(logits, images).mean()


def vae_loss(kl_weight: float = 1.0):
    """The (weighted) negative ELBO in nats per image; returns ``loss_fn(model, batch, generator)`` for ``train``.

    kl_weight = 1 is the true ELBO; smaller weights keep more detail and a less regular latent
    space (Stable Diffusion's autoencoder uses a tiny one).
    """
    if not kl_weight >= 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")

    def loss_fn(model, batch, generator):
        images = batch[0]
        logits, dist = model(images, generator)
        return (reconstruction_nll(logits, images) + kl_weight * dist.kl()).mean()

    return loss_fn


@torch.no_grad()
def negative_elbo(model, images: torch.Tensor, generator: torch.Generator | None = None,
                  batch_size: int = 1000) -> float:
    """Mean -ELBO over ``images`` in nats per image (one z sample each; KL weight 1)."""
    def per_image(x):
        logits, dist = model(x, generator)
        return reconstruction_nll(logits, x) + dist.kl()

    return batched(per_image, images, batch_size).double().mean().item()


@torch.no_grad()
def latent_scaling_factor(vae: ConvVAE, images: torch.Tensor, generator: torch.Generator | None = None,
                          batch_size: int = 1000) -> float:
    """1 / std of sampled latents over ``images``: multiply latents by it to give diffusion unit variance.

    This is how Stable Diffusion's 0.18215 was chosen: measured on data, not derived.
    """
    latents = batched(lambda x: vae.encode(x).sample(generator), images, batch_size)
    return 1.0 / latents.std().item()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]: 10 log10(1 / MSE)."""
    mse = F.mse_loss(x, y).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
