"""Flow matching (Lipman et al. 2023) / rectified flow (Liu et al. 2023): the straight road from noise to a digit.

    path:      x_sigma = (1 - sigma) x0 + sigma noise,     sigma in [0, 1], sigma = 1 is pure noise
    target:    v = d x_sigma / d sigma = noise - x0        the same all along one pair's path: a straight line
    training:  loss = || unet(x_sigma, 1000 sigma) - (noise - x0) ||^2,   sigma ~ U(0, 1) (or logit-normal)
    sampling:  x_1 ~ N(0, I);  x_{sigma'} = x_sigma + (sigma' - sigma) v_pred   (Euler, sigma' < sigma)

The network learns the *average* velocity of all the straight lines through a point, so the paths it
draws are not exactly straight: they bend where the roads of different pairs cross (notebook 07 measures it).
Stable Diffusion 3 and Flux are trained this way; the schedulers below carry ``diffusers``' names
(``FlowMatchEulerDiscreteScheduler``, ``FlowMatchHeunDiscreteScheduler``) and its convention
(``timesteps = 1000 * sigmas``, so the same U-Net and time embedding serve both kinds of model).

**The bridge to diffusion.** A diffusion sample x_t = sqrt(ab) x0 + sqrt(1 - ab) noise divided by
sqrt(ab) + sqrt(1 - ab) is a point of the flow path with sigma = sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab));
the velocity there is noise - x0 (``from_diffusion``). DDIM with eta = 0 is exactly an Euler step of
the flow in these coordinates: diffusion and flow matching differ in the path they train on and in
where they spend their steps, not in the sampler.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import denormalize
from .samplers import SchedulerOutput
from .schedule import TIME_SAMPLING, convert_prediction, sample_sigmas  # noqa: F401 (both part of flow's API)
from .unet import UNet
from .validate import MAX_SEED, check_float, check_int

NUM_TRAIN_TIMESTEPS = 1000          # timestep = 1000 * sigma: the U-Net's time input spans the same range as DDPM's


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """The point at noise level ``sigma`` on the straight line from x0 to ``noise``: (1 - sigma) x0 + sigma noise.

    x0, noise: same shape (B, ...); sigma: a number or (B,) in [0, 1]. ``diffusers`` calls this ``scale_noise``.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise has shape {tuple(noise.shape)} but x0 has {tuple(x0.shape)}; they must match")
    sigma = _per_sample(sigma, x0)
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """What the network should output anywhere on the pair's path: noise - x0 (the line's direction)."""
    return noise - x0


def velocity_loss(model, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The conditional flow-matching loss on one batch: MSE between ``model(x_sigma, 1000 sigma)`` and noise - x0.

    x0, noise: (B, ...) of any shape the model takes; sigma: (B,) in [0, 1]. Returns a scalar.
    """
    x_sigma = interpolate(x0, noise, sigma)
    return F.mse_loss(model(x_sigma, sigma * NUM_TRAIN_TIMESTEPS), velocity_target(x0, noise))


def flow_matching_loss(time_sampling: str = "uniform"):
    """The flow-matching objective for ``course_lib.train.train``, the twin of ``ddpm.diffusion_loss``.

    Returns ``loss_fn(model, batch, generator)``; batch = (images (B, 1, 28, 28) in [0, 1], labels), or the images.
    """
    sample_sigmas(1, time_sampling=time_sampling)      # reject an unknown time_sampling now, not at step 1

    def loss_fn(model, batch, generator):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        x0 = images * 2 - 1                                            # [0, 1] -> [-1, 1], as for the DDPM
        sigma = sample_sigmas(x0.shape[0], generator, time_sampling).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return velocity_loss(model, x0, sigma, noise)

    return loss_fn


def from_diffusion(sample: torch.Tensor, model_output: torch.Tensor, alpha_bar, prediction_type: str = "epsilon"):
    """A diffusion model's view of x_t, translated into flow matching's coordinates.

    sample: x_t = sqrt(ab) x0 + sqrt(1 - ab) noise; model_output: the diffusion network's prediction
    (noise, x0 or v, ``prediction_type``); alpha_bar: ab at t, a number.
    Returns (flow_sample, sigma, velocity): x_t / (sqrt(ab) + sqrt(1 - ab)), the flow's noise level
    sqrt(1 - ab) / (sqrt(ab) + sqrt(1 - ab)), and the velocity noise - x0 the prediction implies.
    """
    x0, noise = convert_prediction(model_output, sample, alpha_bar, prediction_type)
    a, s = float(alpha_bar) ** 0.5, (1 - float(alpha_bar)) ** 0.5
    return sample / (a + s), s / (a + s), noise - x0


class DiffusionAsFlow(nn.Module):
    """A trained diffusion network, driven as a flow: ``forward(x_sigma, timestep) -> velocity``, so that
    ``FlowMatchingPipeline`` and the flow schedulers can sample it on the flow's clock (evenly spaced sigma)
    instead of DDIM's (evenly spaced t). Only the clock differs from DDIM: DDIM is this Euler step.

    unet(x_t, t) is a diffusion network on ``schedule`` (a ``NoiseSchedule``) predicting ``prediction_type``;
    timestep = 1000 sigma, as for a flow model. For each sigma it asks the network at the training step t
    whose flow level sqrt(1 - ab_t) / (sqrt(ab_t) + sqrt(1 - ab_t)) is nearest, on
    x_t = (sqrt(ab_t) + sqrt(1 - ab_t)) x_sigma, and returns the velocity noise - x0 its prediction implies.
    clip_sample: clip the x0 guess to [-1, 1] and recompute the noise from it, as the course's DDIM does
    (``use_clipped_model_output``).
    """

    def __init__(self, unet: nn.Module, schedule, prediction_type: str = "epsilon", clip_sample: bool = True):
        super().__init__()
        self.unet, self.prediction_type, self.clip_sample = unet, prediction_type, clip_sample
        self.alphas_cumprod = schedule.alphas_cumprod.double()
        a, s = self.alphas_cumprod.sqrt(), (1 - self.alphas_cumprod).sqrt()
        self.levels = s / (a + s)                                       # the flow sigma of every training t

    def forward(self, x: torch.Tensor, timestep) -> torch.Tensor:
        sigma = torch.as_tensor(timestep, dtype=torch.float64).cpu().flatten() / NUM_TRAIN_TIMESTEPS
        t = (self.levels[None, :] - sigma[:, None]).abs().argmin(dim=1).expand(x.shape[0])   # nearest step, (B,)
        ab = self.alphas_cumprod[t].reshape(-1, *([1] * (x.ndim - 1)))
        a, s = ab.sqrt().to(x), (1 - ab).sqrt().to(x)
        x_t = x * (a + s)
        x0, noise = convert_prediction(self.unet(x_t, t.to(x.device)), x_t, ab.to(x), self.prediction_type)
        if self.clip_sample:
            x0 = x0.clamp(-1, 1)
            noise = (x_t - a * x0) / s
        return noise - x0


def _per_sample(sigma, like: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return sigma.reshape(-1, *([1] * (like.ndim - 1))) if sigma.ndim == 1 else sigma


class FlowMatchEulerDiscreteScheduler:
    """Euler's method on the learned flow, from sigma = 1 (noise) to sigma = 0 (a digit).

    set_timesteps(n) picks n + 1 noise levels ``sigmas`` from 1 to 0 (evenly spaced, or bent towards
    the noisy end by ``shift`` > 1, SD3's "time shift": sigma -> shift sigma / (1 + (shift - 1) sigma));
    ``timesteps`` = 1000 * sigmas[:-1] are what the network is told. Each ``step`` moves to the next level:
    x_{sigma'} = x_sigma + (sigma' - sigma) * model_output. Call ``step`` once per timestep, in order.
    """

    order = 1                                       # network calls per step (Heun: 2)

    def __init__(self, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, shift: float = 1.0):
        check_float("shift", shift, 0.1, 100.0)
        self.num_train_timesteps = num_train_timesteps
        self.shift = float(shift)
        self.num_inference_steps = None
        self.timesteps = None
        self.sigmas = None

    def set_timesteps(self, num_inference_steps: int | None = None, sigmas=None) -> None:
        """Choose the noise levels to visit, noisiest first: ``num_inference_steps`` evenly spaced steps from 1
        to 0 (bent by ``shift``), or your own ``sigmas``, every level including the last (e.g. [1.0, 0.6, 0.0])."""
        if sigmas is None:
            check_int("num_inference_steps", num_inference_steps, 1, self.num_train_timesteps)
            sigmas = torch.linspace(1.0, 0.0, num_inference_steps + 1, dtype=torch.float64)
            sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
        else:
            sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
            if len(sigmas) < 2 or (sigmas[1:] >= sigmas[:-1]).any() or sigmas.min() < 0 or sigmas.max() > 1:
                raise ValueError(f"sigmas must fall strictly from at most 1 to at least 0, two or more of them; "
                                 f"got {sigmas.tolist()}")
        self.num_inference_steps = len(sigmas) - 1
        self._levels = sigmas                       # sigma at the start and end of every step
        self.sigmas, self.timesteps = self._schedule(sigmas)
        self._step_index = 0

    def _schedule(self, levels: torch.Tensor):
        """(sigmas, timesteps): the noise level of every network call, and 1000 x that."""
        sigmas = levels[:-1].float()
        return sigmas, sigmas * self.num_train_timesteps

    def _advance(self, timestep) -> int:
        """Check ``timestep`` is the one due now; return its index and move on."""
        if self.timesteps is None:
            raise RuntimeError("call scheduler.set_timesteps(num_inference_steps) before scheduler.step(...)")
        i = self._step_index
        if i >= len(self.timesteps):
            raise RuntimeError(f"all {len(self.timesteps)} timesteps are done; call set_timesteps again to start over")
        expected = self.timesteps[i].item()
        if abs(float(timestep) - expected) > 1e-3:
            raise ValueError(f"step {i} is at timestep {expected:g}, got {float(timestep):g}: "
                             "call step once per entry of scheduler.timesteps, in order")
        self._step_index += 1
        return i

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> SchedulerOutput:
        """model_output: the predicted velocity, like sample (B, C, H, W); timestep: the next of ``timesteps``.

        Returns x at the next noise level and the current guess of x0 = x_sigma - sigma v.
        (``generator`` is accepted for a common signature; the flow draws no noise.)
        """
        i = self._advance(timestep)
        sigma, sigma_next = self._levels[i].item(), self._levels[i + 1].item()
        return SchedulerOutput(sample + (sigma_next - sigma) * model_output, sample - sigma * model_output)

    @property
    def state_in_first_order(self) -> bool:
        """True when the last ``step`` finished a step (the sample is at a level of ``set_timesteps``);
        False between Heun's trial step and its correction. Named as in ``diffusers``."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shift={self.shift}, num_inference_steps={self.num_inference_steps})"


class FlowMatchHeunDiscreteScheduler(FlowMatchEulerDiscreteScheduler):
    """Heun's method: an Euler step to the next level, a second look at the slope there, and the step
    redone with the average of the two slopes. Second order: the error shrinks like (step size)^2.

    ``timesteps`` lists each level's network call: the first level once, every later one twice
    (the end of one step and the start of the next), the last step being plain Euler because it ends
    on the clean image: 2 n - 1 network calls for n steps, as in ``diffusers`` and Karras et al. (2022).
    """

    order = 2

    def _schedule(self, levels: torch.Tensor):
        inner = levels[1:-1].repeat_interleave(2)
        sigmas = torch.cat([levels[:1], inner]).float()
        self._first_order = True
        return sigmas, sigmas * self.num_train_timesteps

    @property
    def state_in_first_order(self) -> bool:
        return self._first_order

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> SchedulerOutput:
        """Alternates: a trial Euler step (returns the point where the next call looks), then the corrected step."""
        self._advance(timestep)
        if self._first_order:
            level = (self._step_index + 1) // 2 - 1           # which step this call starts
            sigma, sigma_next = self._levels[level].item(), self._levels[level + 1].item()
            x0 = sample - sigma * model_output
            trial = sample + (sigma_next - sigma) * model_output
            if sigma_next > 0:                                # look again at the slope there
                self._first_order = False
                self._saved = (sample, model_output, sigma, sigma_next)
            return SchedulerOutput(trial, x0)
        start, slope, sigma, sigma_next = self._saved
        self._first_order, self._saved = True, None
        x0 = sample - sigma_next * model_output
        return SchedulerOutput(start + (sigma_next - sigma) * (slope + model_output) / 2, x0)


FLOW_SAMPLERS = {"euler": FlowMatchEulerDiscreteScheduler, "heun": FlowMatchHeunDiscreteScheduler}


class FlowMatchingPipeline:
    """Unconditional digits from a flow-matching U-Net: noise -> velocity + Euler (or Heun) steps -> digits in [0, 1].

    ``unet(x_sigma, 1000 sigma)`` predicts the velocity noise - x0; ``sample_shape`` is one image's (C, H, W).
    """

    def __init__(self, unet: UNet, sample_shape=(1, 28, 28), info: dict | None = None):
        self.unet = unet.eval()
        self.sample_shape = tuple(sample_shape)
        self.info = info or {}

    @torch.no_grad()
    def __call__(self, batch_size: int = 16, num_inference_steps: int = 8, sampler: str = "euler",
                 seed: int = 0, shift: float = 1.0, callback=None, progress: bool = True, sigmas=None) -> torch.Tensor:
        """Generate ``batch_size`` digits; returns (batch_size, 1, 28, 28) in [0, 1] on the CPU.

        sampler: "euler" (one network call per step) or "heun" (2 n - 1 calls for n steps, more accurate).
        seed fixes the starting noise; shift > 1 spends more steps at high noise (see the scheduler).
        sigmas: your own noise levels, every one from 1 to 0 (e.g. ``step_search.search_sigmas``'s); they
        replace num_inference_steps and shift.
        callback(i, t, sample, pred_original_sample) is called after each network call, for snapshots.
        """
        check_int("batch_size", batch_size, 1, 10_000)
        check_int("seed", seed, 0, MAX_SEED)
        noise = torch.randn((batch_size, *self.sample_shape), generator=torch.Generator().manual_seed(seed))
        return denormalize(self.solve(noise, num_inference_steps, sampler, shift, callback, progress, sigmas)).cpu()

    @torch.no_grad()
    def solve(self, noise: torch.Tensor, num_inference_steps: int = 8, sampler: str = "euler", shift: float = 1.0,
              callback=None, progress: bool = True, sigmas=None, return_levels: bool = False):
        """Integrate the learned flow from ``noise`` (B, C, H, W) at sigma = 1 to sigma = 0.

        Returns the end point in the network's range (about [-1, 1], not clipped), on the network's device:
        ``__call__`` turns it into digits; ``reflow_pairs`` keeps it as the partner of its noise.
        return_levels: return instead the sample at every level, the noise first and the end point last
        (a list of num_inference_steps + 1 tensors; Heun's trial points are not levels).
        """
        if sampler not in FLOW_SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(map(repr, FLOW_SAMPLERS))}, got {sampler!r}")
        if tuple(noise.shape[1:]) != self.sample_shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; this model draws (B, {self.sample_shape})")
        scheduler = FLOW_SAMPLERS[sampler](shift=shift)
        scheduler.set_timesteps(num_inference_steps, sigmas=sigmas)
        if sigmas is not None and (scheduler._levels[0] != 1 or scheduler._levels[-1] != 0):
            raise ValueError(f"sigmas must run from 1 (the noise this pipeline starts from) to 0 (the digit); got "
                             f"{[round(s, 4) for s in scheduler._levels.tolist()]}")
        device = next(self.unet.parameters()).device
        sample = noise.to(device)
        levels = [sample]                           # kept only on request: they hold every intermediate batch
        for i, t in enumerate(tqdm(scheduler.timesteps, desc=f"flow {sampler}", disable=not progress, leave=False)):
            velocity = self.unet(sample, torch.full((sample.shape[0],), float(t), device=device))
            out = scheduler.step(velocity, t, sample)
            sample = out.prev_sample
            if return_levels and scheduler.state_in_first_order:
                levels.append(sample)
            if callback is not None:
                callback(i, float(t), sample, out.pred_original_sample)
        return levels if return_levels else sample


def reflow_pairs(pipe: FlowMatchingPipeline, num_pairs: int, num_inference_steps: int = 16, sampler: str = "heun",
                 seed: int = 0, batch_size: int = 500, progress: bool = True):
    """Reflow's training data (Liu et al. 2023): fresh noise and the digit the trained flow carries it to.

    Returns (noise, x0), each (num_pairs, C, H, W) on the CPU, x0 in about [-1, 1]. A model trained on
    these *coupled* pairs, instead of independent (noise, digit) pairs, learns roads that cross far less,
    so they are nearly straight, and few Euler steps follow them.
    """
    check_int("num_pairs", num_pairs, 1, 10**7)
    noise = torch.randn((num_pairs, *pipe.sample_shape), generator=torch.Generator().manual_seed(seed))
    x0 = torch.cat([pipe.solve(chunk, num_inference_steps, sampler, progress=False).cpu()
                    for chunk in tqdm(noise.split(batch_size), desc="reflow pairs", disable=not progress)])
    return noise, x0


def reflow_loss(time_sampling: str = "uniform"):
    """The flow-matching loss on coupled pairs: batch = (noise, x0) from ``reflow_pairs``, for ``train``."""
    sample_sigmas(1, time_sampling=time_sampling)

    def loss_fn(model, batch, generator):
        noise, x0 = batch
        sigma = sample_sigmas(x0.shape[0], generator, time_sampling).to(x0.device)
        return velocity_loss(model, x0, sigma, noise)

    return loss_fn
