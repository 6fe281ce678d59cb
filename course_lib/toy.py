"""Diffusion and flow matching on a 2-D toy, small enough to train in seconds and to *see* the paths.

    data:       two_moons(n) -> (n, 2) points in [-1, 1]^2 (two interleaved half-circles)
    networks:   ToyNet(x (B, 2), timestep (B,)) -> (B, 2), the noise (diffusion) or the velocity (flow)
    training:   train_toy("diffusion" | "flow") -> the trained ToyNet (the course's own losses and loop)
    sampling:   toy_trajectories(net, kind, noise, num_inference_steps) -> every intermediate point

Everything here reuses the library's one implementation: the DDPM loss and ``DDIMScheduler`` for
diffusion (with the pixel DDPM's linear schedule and clipping to [-1, 1]), ``velocity_loss`` and
``FlowMatchEulerDiscreteScheduler`` for flow matching. Only the data and the network are new.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .ddpm import prediction_loss
from .flow import FlowMatchEulerDiscreteScheduler, sample_sigmas, velocity_loss
from .samplers import DDIMScheduler
from .schedule import NoiseSchedule
from .train import train
from .unet import timestep_embedding
from .validate import check_int

KINDS = ("diffusion", "flow")


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.04) -> torch.Tensor:
    """n points (n, 2) on two interleaved half-circles, scaled into [-1, 1]^2 like the course's pixels."""
    check_int("n", n, 1, 10_000_000)
    upper = torch.rand(n, generator=generator) < 0.5
    angle = torch.rand(n, generator=generator) * math.pi
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    points = torch.stack([(x - 0.5) / 1.6, (y - 0.25) / 1.6], dim=1)      # centred, inside [-0.95, 0.95]
    return points + noise * torch.randn(n, 2, generator=generator)


class ToyNet(nn.Module):
    """An MLP for 2-D points: x (B, 2) and timestep (B,) in [0, 1000] -> (B, 2).

    The timestep enters as the U-Net's sinusoidal features, concatenated with the point.
    """

    def __init__(self, hidden: int = 128, time_dim: int = 32):
        super().__init__()
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(2 + time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor, timestep) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != 2:
            raise ValueError(f"ToyNet takes points of shape (B, 2), got {tuple(x.shape)}")
        t = torch.as_tensor(timestep, device=x.device).float().expand(x.shape[0])
        return self.net(torch.cat([x, timestep_embedding(t, self.time_dim)], dim=1))


def toy_loss(kind: str):
    """``loss_fn(model, batch, generator)`` for ``course_lib.train.train`` on a batch of points (B, 2):
    the DDPM noise-prediction loss (linear schedule, T = 1000) or the flow-matching velocity loss."""
    _check_kind(kind)
    schedule = NoiseSchedule("linear")

    def loss_fn(model, batch, generator):
        x0 = batch[0]
        noise = torch.randn(x0.shape, generator=generator)
        if kind == "diffusion":
            t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=generator)
            return prediction_loss(model, x0, t, noise, schedule)
        return velocity_loss(model, x0, sample_sigmas(x0.shape[0], generator), noise)

    return loss_fn


def train_toy(kind: str, steps: int = 4000, batch_size: int = 256, seed: int = 0, progress: bool = True) -> ToyNet:
    """Train a ``ToyNet`` on 20,000 two-moons points with the course's training loop; returns its EMA copy."""
    _check_kind(kind)
    torch.manual_seed(seed)
    data = two_moons(20_000, torch.Generator().manual_seed(seed))
    result = train(ToyNet(), toy_loss(kind), (data,), steps=steps, batch_size=batch_size, lr=5e-3,
                   warmup_steps=100, ema_decay=0.995, seed=seed, progress=progress, desc=f"toy {kind}")
    return result.ema_model


@torch.no_grad()
def toy_trajectories(net: ToyNet, kind: str, noise: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
    """Run the sampler from ``noise`` (B, 2); returns every point it visits, (num_inference_steps + 1, B, 2).

    kind "diffusion": DDIM (eta = 0), an Euler step of diffusion's probability-flow ODE in rescaled coordinates
    (``flow.from_diffusion``), with the pixel DDPM's settings (clipping included); kind "flow": Euler steps of the learned velocity from sigma = 1 to 0.
    """
    _check_kind(kind)
    scheduler = DDIMScheduler() if kind == "diffusion" else FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(num_inference_steps)
    x, path = noise, [noise]
    for t in scheduler.timesteps:
        x = scheduler.step(net(x, torch.full((x.shape[0],), float(t))), t, x).prev_sample
        path.append(x)
    return torch.stack(path)


def straightness(trajectory: torch.Tensor) -> torch.Tensor:
    """Per point: distance from start to end divided by the length of the path travelled, (B,) in (0, 1].

    1 means a straight line; trajectory is (steps + 1, B, 2) as from ``toy_trajectories``.
    """
    travelled = (trajectory[1:] - trajectory[:-1]).norm(dim=-1).sum(dim=0)
    return (trajectory[-1] - trajectory[0]).norm(dim=-1) / travelled.clamp_min(1e-12)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """How far apart two clouds of 2-D points are: the 1-D Wasserstein distance averaged over random directions.

    a, b: (N, 2) with the same N. 0 for identical clouds; it sees both misplaced points and missing ones.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must both be (N, 2) with the same N, got {tuple(a.shape)} and {tuple(b.shape)}")
    angles = torch.rand(num_projections, generator=torch.Generator().manual_seed(seed)) * math.pi
    directions = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)           # (P, 2)
    pa, pb = (a.double() @ directions.T.double()).sort(dim=0).values, (b.double() @ directions.T.double()).sort(dim=0).values
    return (pa - pb).abs().mean().item()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
