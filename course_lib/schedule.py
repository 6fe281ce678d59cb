"""The forward (noising) process: beta schedules, alphas_cumprod, q_sample, SNR, posterior.

Notation follows the DDPM paper (Ho et al., 2020) and Hugging Face ``diffusers``:

    beta_t            variance of the noise added at step t
    alpha_t           = 1 - beta_t
    alphas_cumprod    alpha-bar_t = alpha_1 * ... * alpha_t, how much signal survives

One step of the Markov chain:   x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps
Closed form (any t in one go):   x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps

What a network predicts (``prediction_type``, diffusers' names), with a = sqrt(alpha-bar_t),
s = sqrt(1 - alpha-bar_t) and x_t = a x_0 + s eps:

    "epsilon"        the noise eps                       (DDPM)
    "sample"         the clean image x_0
    "v_prediction"   the velocity v = a eps - s x_0      (Salimans & Ho 2022; most recent models)

Any one of them and x_t give the other two (``convert_prediction``): they differ only in which
errors the loss weighs most, and so in how a sampler amplifies the network's mistakes.

Indexing: like ``diffusers``, timesteps are the integers 0..T-1 and index the
arrays directly. Code ``t = 0`` is the paper's first noising step (t = 1) and
``t = T-1`` its last (t = T); ``x_0`` is always the clean image.
"""

from __future__ import annotations

import math

import torch

from .validate import check_int

NUM_TRAIN_TIMESTEPS = 1000
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def linear_beta_schedule(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                         beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's schedule: betas spaced evenly from ``beta_start`` to ``beta_end``. Shape (T,), float64."""
    _check_num_timesteps(num_train_timesteps)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def cosine_beta_schedule(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, s: float = 0.008,
                         max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's schedule (Nichol & Dhariwal, 2021); ``diffusers``' "squaredcos_cap_v2".

    alpha-bar(t) = f(t) / f(0) with f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), and
    beta_t = 1 - alpha-bar(t+1) / alpha-bar(t), capped at ``max_beta`` so the last
    step stays finite. Shape (T,), float64.
    """
    _check_num_timesteps(num_train_timesteps)
    steps = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def make_beta_schedule(name: str = "linear",
                       num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """``"linear"`` or ``"cosine"`` betas, shape (T,)."""
    if name == "linear":
        return linear_beta_schedule(num_train_timesteps)
    if name in ("cosine", "squaredcos_cap_v2"):
        return cosine_beta_schedule(num_train_timesteps)
    raise ValueError(f"unknown beta schedule {name!r}; choose 'linear' or 'cosine'")


class NoiseSchedule:
    """Everything the forward process needs, precomputed once from the betas.

    All tensors have shape (T,) and dtype float64 (single precision loses the
    tiny alphas_cumprod near t = T-1). Methods take ``t`` as an int or an int
    tensor of shape (B,), one timestep per image in the batch.
    """

    def __init__(self, beta_schedule: str = "linear",
                 num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                 betas: torch.Tensor | None = None):
        if betas is None:
            betas = make_beta_schedule(beta_schedule, num_train_timesteps)
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with every value in (0, 1)")
        self.beta_schedule = beta_schedule
        self.num_train_timesteps = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # square roots taken in float64: 1 - alpha-bar in float32 loses the small values near t = 0
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()
        # alpha-bar_{t-1}; for t = 0 the "previous" image is x_0 itself, alpha-bar = 1
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64),
                                              self.alphas_cumprod[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x_0 + coef2 * x_t, posterior_variance)   [DDPM eq. 7]
        self.posterior_variance = betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1 - self.alphas_cumprod)

    def __repr__(self) -> str:
        return (f"NoiseSchedule(beta_schedule={self.beta_schedule!r}, "
                f"num_train_timesteps={self.num_train_timesteps})")

    # --- the forward process ------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample x_t ~ q(x_t | x_0) in one step: sqrt(ab_t) x_0 + sqrt(1 - ab_t) noise.

        x0: (B, C, H, W) in [-1, 1]; t: int or (B,) ints in [0, T-1];
        noise: like x0, standard normal (drawn with ``generator`` if None).
        Returns x_t with x0's shape and dtype. ``diffusers`` calls this ``add_noise``.
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        if noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; they must match")
        return (self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def get_velocity(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """The velocity v = sqrt(ab_t) noise - sqrt(1 - ab_t) x0 (same shapes as ``q_sample``)."""
        return self._gather(self.sqrt_alphas_cumprod, t, x0) * noise - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t, prediction_type: str = "epsilon"):
        """What a network of ``prediction_type`` should output for x_t = q_sample(x0, t, noise)."""
        check_prediction_type(prediction_type)
        if prediction_type == "epsilon":
            return noise
        return x0 if prediction_type == "sample" else self.get_velocity(x0, noise, t)

    def step_forward(self, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """One link of the Markov chain: x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) noise."""
        if noise is None:
            noise = torch.randn(x_prev.shape, generator=generator, dtype=x_prev.dtype).to(x_prev.device)
        return self._gather(self.alphas.sqrt(), t, x_prev) * x_prev + self._gather(self.betas.sqrt(), t, x_prev) * noise

    def snr(self, t=None) -> torch.Tensor:
        """Signal-to-noise ratio alpha-bar_t / (1 - alpha-bar_t); all T values if ``t`` is None."""
        ab = self.alphas_cumprod if t is None else self.alphas_cumprod[self._index(t)]
        return ab / (1 - ab)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """Mean and variance of q(x_{t-1} | x_t, x_0), the target the reverse process learns.

        x0, x_t: (B, C, H, W); t: int or (B,) ints. Returns (mean like x_t,
        variance broadcastable to x_t). At t = 0 the variance is 0: x_{-1} is x_0.
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        mean = (self._gather(self.posterior_mean_coef1, t, x_t) * x0
                + self._gather(self.posterior_mean_coef2, t, x_t) * x_t)
        return mean, self._gather(self.posterior_variance, t, x_t)

    # --- helpers --------------------------------------------------------------

    def _index(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be integers in [0, {self.num_train_timesteps - 1}], got dtype {t.dtype}")
        if t.numel() and (t.min() < 0 or t.max() >= self.num_train_timesteps):
            raise ValueError(f"timestep out of range: got {t.min().item()}..{t.max().item()}, but this schedule "
                             f"has num_train_timesteps={self.num_train_timesteps}, so t must be in "
                             f"[0, {self.num_train_timesteps - 1}]")
        return t.long().cpu()

    def _gather(self, values: torch.Tensor, t, like: torch.Tensor) -> torch.Tensor:
        """values[t] shaped (B, 1, 1, 1) to broadcast over ``like`` (B, C, H, W), in like's dtype."""
        idx = self._index(t)
        if idx.ndim == 1 and like.ndim >= 1 and len(idx) not in (1, like.shape[0]):
            raise ValueError(f"got {len(idx)} timesteps for a batch of {like.shape[0]} images; "
                             "pass one timestep per image, or a single int")
        out = values[idx].to(device=like.device, dtype=like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1))) if idx.ndim == 1 else out


EVERY_STEP = (0.0, 1.0)   # the interval of the noise timeline that holds every timestep


TIME_SAMPLING = ("uniform", "logit_normal")


def check_time_sampling(time_sampling: str) -> None:
    if time_sampling not in TIME_SAMPLING:
        raise ValueError(f"time_sampling must be one of {', '.join(map(repr, TIME_SAMPLING))}, got {time_sampling!r}")


def sample_sigmas(n: int, generator: torch.Generator | None = None, time_sampling: str = "uniform") -> torch.Tensor:
    """n flow-matching training noise levels sigma (n,) in (0, 1), for x = (1 - sigma) x0 + sigma noise (notebook 07):
    uniform, or logit-normal (sigmoid of N(0, 1), SD3's choice, which spends more of training on the middle levels,
    where the velocity is hardest to guess). ``ddpm.sample_timesteps`` turns them into DDPM timesteps."""
    check_time_sampling(time_sampling)
    if time_sampling == "uniform":
        return torch.rand(n, generator=generator)
    return torch.sigmoid(torch.randn(n, generator=generator))


def in_interval(timestep: int, interval, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> bool:
    """Whether ``timestep`` lies in ``interval`` = (low, high), fractions of the noise timeline: 0 the clean end,
    1 the pure-noise end (timestep / (num_train_timesteps - 1)); (0, 1) holds every timestep."""
    low, high = interval
    return low <= timestep / (num_train_timesteps - 1) <= high


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(map(repr, PREDICTION_TYPES))}, "
                         f"got {prediction_type!r}")


def convert_prediction(model_output: torch.Tensor, sample: torch.Tensor, alpha_bar, prediction_type: str):
    """Turn a network's output into (x0 guess, noise guess), both like ``sample`` (x_t, (B, C, H, W)).

    alpha_bar: alpha-bar_t, a float or a tensor broadcastable to ``sample`` (e.g. (B, 1, 1, 1)).
    With a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar) and x_t = a x0 + s eps:
        epsilon:       x0 = (x_t - s eps) / a
        sample:        eps = (x_t - a x0) / s
        v_prediction:  x0 = a x_t - s v,   eps = s x_t + a v      (a^2 + s^2 = 1)
    """
    check_prediction_type(prediction_type)
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} must match")
    alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    a = alpha_bar.sqrt().to(sample.dtype).to(sample.device)
    s = (1 - alpha_bar).sqrt().to(sample.dtype).to(sample.device)
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a, model_output
    if prediction_type == "sample":
        return model_output, (sample - a * model_output) / s
    return a * sample - s * model_output, s * sample + a * model_output


def _check_num_timesteps(n) -> None:
    check_int("num_train_timesteps", n, 1, 100_000)
