"""DDPM in pixel space (Ho et al. 2020): the training loss and the pipeline that draws digits.

    training:  x0 (B, 1, 28, 28) in [-1, 1], t ~ U{0..T-1}, noise ~ N(0, I)
               loss = || unet(sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t) - noise ||^2
               (or - x0, or - v: ``prediction_type``, see ``course_lib.schedule``)
    sampling:  x_T ~ N(0, I) --[ unet + scheduler.step, num_inference_steps ]--> x_0 --> digits in [0, 1]

Its latent-space twin, conditioned on text, is ``course_lib.ldm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import denormalize
from .samplers import make_scheduler
from .schedule import (EVERY_STEP, NoiseSchedule, check_prediction_type, check_time_sampling, in_interval,
                       sample_sigmas)
from .unet import UNet
from .validate import MAX_SEED, check_int, check_interval


def noise_prediction_loss(model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                          schedule: NoiseSchedule) -> torch.Tensor:
    """Noise x0 (B, C, H, W) in [-1, 1] to x_t with ``noise``, ask ``model(x_t, t)`` for the noise: the MSE, a scalar."""
    return F.mse_loss(model(schedule.q_sample(x0, t, noise), t), noise)


def prediction_loss(model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule,
                    prediction_type: str = "epsilon", input_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Like ``noise_prediction_loss``, for a network that predicts ``prediction_type`` (noise, x0 or v).

    input_noise: the noise that makes the network's input x_t, if not ``noise`` itself (input perturbation,
    ``diffusion_loss``); the target is still made from ``noise``.
    """
    target = schedule.training_target(x0, noise, t, prediction_type)    # the noise itself for "epsilon"
    return F.mse_loss(model(schedule.q_sample(x0, t, noise if input_noise is None else input_noise), t), target)


def sample_timesteps(n: int, schedule: NoiseSchedule, generator: torch.Generator | None = None,
                     time_sampling: str = "uniform") -> torch.Tensor:
    """n training timesteps (n,) in [0, T-1].

    "uniform": t ~ U{0..T-1}, as Ho et al. On the linear schedule half of those are above t = 500, where
    alpha-bar_t < 0.08. "logit_normal": the flow model's noise levels (``schedule.sample_sigmas``, notebook 07), each
    turned into the timestep with the nearest signal-to-noise ratio; a flow level sigma has
    SNR = ((1 - sigma) / sigma)^2, so about nine in ten land below t = 500.
    """
    check_time_sampling(time_sampling)
    if time_sampling == "uniform":
        return torch.randint(0, schedule.num_train_timesteps, (n,), generator=generator)
    sigma = sample_sigmas(n, generator, time_sampling).double()
    log_snr = 2 * (torch.log1p(-sigma) - torch.log(sigma))
    # log SNR falls as t grows: count the timesteps still cleaner than the target, then take the nearer neighbour
    table = schedule.snr().log()
    t = torch.searchsorted(-table, -log_snr).clamp(1, len(table) - 1)
    nearer_before = (table[t - 1] - log_snr).abs() < (table[t] - log_snr).abs()
    return torch.where(nearer_before, t - 1, t)


def diffusion_loss(schedule: NoiseSchedule, prediction_type: str = "epsilon", time_sampling: str = "uniform",
                   input_perturbation: float = 0.0):
    """The DDPM objective: pick t at random (``sample_timesteps``), noise x0 to x_t, predict the noise (or x0, or v), MSE.

    input_perturbation: gamma >= 0 of Ning et al. 2023 ("Input perturbation reduces exposure bias in diffusion
    models"; diffusers' ``--input_perturbation``): x_t is made with noise + gamma * xi (xi a second draw) while the
    target keeps the first noise, so the network learns to pull slightly wrong inputs back, as a sampler's own
    errors are. 0 (the default) draws nothing more: the loss is exactly the plain one.
    Returns ``loss_fn(model, batch, generator)`` for ``course_lib.train.train``;
    batch = (images (B, 1, 28, 28) in [0, 1], labels (B,)), or the images alone.
    """
    def loss_fn(model, batch, generator):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        x0 = images * 2 - 1                                          # [0, 1] -> [-1, 1]
        t = sample_timesteps(x0.shape[0], schedule, generator, time_sampling).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        input_noise = None
        if input_perturbation:
            input_noise = noise + input_perturbation * torch.randn(x0.shape, generator=generator).to(x0.device)
        return prediction_loss(model, x0, t, noise, schedule, prediction_type, input_noise)

    check_prediction_type(prediction_type)
    check_time_sampling(time_sampling)      # now, not at step 1; and without drawing (the network is seeded after this)
    if not 0 <= input_perturbation < 1:
        raise ValueError(f"input_perturbation is a noise scale in [0, 1) (0.1 in the paper), got {input_perturbation}")
    return loss_fn


class DDPMPipeline:
    """Unconditional digit generation: noise -> UNet + scheduler -> digits in [0, 1].

    ``unet`` predicts the noise in x_t (or x0, or v: ``prediction_type``); ``sample_shape`` is one
    image's (C, H, W).
    """

    def __init__(self, unet: UNet, sample_shape=(1, 28, 28), num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", prediction_type: str = "epsilon", info: dict | None = None):
        check_prediction_type(prediction_type)
        self.unet = unet.eval()
        self.prediction_type = prediction_type
        self.sample_shape = tuple(sample_shape)
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.info = info or {}

    @torch.no_grad()
    def __call__(self, batch_size: int = 16, num_inference_steps: int = 1000, sampler: str = "ddpm",
                 seed: int = 0, eta: float = 0.0, use_clipped_model_output: bool = True,
                 eta_interval=EVERY_STEP, callback=None, progress: bool = True) -> torch.Tensor:
        """Generate ``batch_size`` digits; returns (batch_size, 1, 28, 28) in [0, 1] on the CPU.

        sampler: "ddpm" (ancestral, best with many steps), "ddim" (deterministic for eta=0, good with
        20-100 steps) or "dpmsolver" (DPM-Solver++(2M), second order, for the fewest steps).
        seed fixes the starting noise and every random step.
        eta and use_clipped_model_output: see ``DDIMScheduler.step`` (DDIM only).
        eta_interval (low, high), fractions of the noise timeline (0 clean, 1 pure noise): DDIM adds its ``eta``
        noise only at timesteps in it and is deterministic elsewhere; (0, 0.5) is t < 500 of 1000. Like EDM's
        S_tmin/S_tmax (Karras et al. 2022) and the latent pipeline's ``guidance_interval``; with eta=1 it shows
        in which part of the path DDPM's fresh noise makes the difference.
        callback(i, t, sample, pred_original_sample) is called after each step, for snapshots.
        """
        check_int("batch_size", batch_size, 1, 10_000)
        check_int("num_inference_steps", num_inference_steps, 1, self.num_train_timesteps)
        check_int("seed", seed, 0, MAX_SEED)
        scheduler = make_scheduler(sampler, num_train_timesteps=self.num_train_timesteps,
                                   beta_schedule=self.beta_schedule, prediction_type=self.prediction_type)
        eta_interval = check_interval("eta_interval", eta_interval)
        if sampler != "ddim" and (eta != 0.0 or not use_clipped_model_output or eta_interval != EVERY_STEP):
            raise ValueError("eta, use_clipped_model_output and eta_interval only apply to sampler='ddim'")
        scheduler.set_timesteps(num_inference_steps)
        device = next(self.unet.parameters()).device
        generator = torch.Generator().manual_seed(seed)
        sample = torch.randn((batch_size, *self.sample_shape), generator=generator).to(device)
        for i, t in enumerate(tqdm(scheduler.timesteps, desc=f"{sampler} sampling", disable=not progress,
                                   leave=False)):
            noise_pred = self.unet(sample, torch.full((batch_size,), int(t), device=device))
            extra = {} if sampler != "ddim" else {     # DDIM's own arguments at this step
                "eta": eta if in_interval(int(t), eta_interval, self.num_train_timesteps) else 0.0,
                "use_clipped_model_output": use_clipped_model_output}
            out = scheduler.step(noise_pred, int(t), sample, generator=generator, **extra)
            sample = out.prev_sample
            if callback is not None:
                callback(i, int(t), sample, out.pred_original_sample)
        return denormalize(sample).cpu()
