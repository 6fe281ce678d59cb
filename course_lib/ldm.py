"""Latent diffusion, the design of Stable Diffusion: a prompt in, a digit out.

    prompt --tokenizer--> ids (B, 12) --CLIP text encoder (frozen)--> tokens (B, 12, 64)
                                                                           | cross-attention
    noise (B, 4, 7, 7) --[ conditional UNet + DDIM scheduler, 50 steps ]--> latents (B, 4, 7, 7)
                                                                           |
                                                  VAE decoder (frozen) --> digits (B, 1, 28, 28)

* Diffusion runs on the VAE's 4 x 7 x 7 latents (196 numbers) instead of 784 pixels: every
  step of the U-Net is far cheaper, and the VAE decoder draws the fine strokes at the end.
* The U-Net reads the prompt through **cross-attention** to the text encoder's token
  embeddings (``encoder_hidden_states``), the same CLIP text encoder chapter 04 trained.
* **Classifier-free guidance** (Ho & Salimans, 2022): training replaces the caption by the
  empty text 10% of the time, so one network predicts the noise both with and without the
  prompt. Sampling extrapolates from the unconditional prediction towards the conditional one,
  noise = uncond + guidance_scale * (cond - uncond): above 1 it follows the prompt harder.
  Three published refinements are arguments of the pipeline: ``guidance_interval`` guides only in a range of
  noise levels (Kynkaanniemi et al. 2024; the default guides the least noisy fifth, chosen by measurement),
  ``guidance_rescale`` pulls the guided prediction's scale back to the conditional one's (Lin et al. 2024), and
  ``condition_annealing`` (CADS, Sadat et al. 2024) blends the prompt with noise at the noisiest steps, so the
  rough shape is drawn as freely as by the unconditional model and the prompt takes over later: more varied digits.
* **img2img**: encode a digit, noise it to a fraction ``strength`` of the schedule, then denoise
  with the prompt: strength 0 gives the input back, strength 1 ignores it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .attention import record_attention
from .samplers import DDIMScheduler
from .schedule import EVERY_STEP, NoiseSchedule, in_interval
from .validate import MAX_SEED, batched, check_digits, check_float, check_int, check_interval

# The default guidance, chosen from bench/guidance_bench.py's measurements of the shipped model by one rule
# (course_tools.bench.recommended_guidance): of the settings that, on both seeds, drew the asked digit at least 99.5% of
# the time, the asked thickness at least 95% of the time and digits at least 0.85 as varied as real ones, the one
# closest to real digits. That is guidance at scale 6 applied only in the least noisy fifth of the timeline (an
# interval, Kynkaenniemi et al. 2024), with the prompt faded in by condition annealing (CADS, Sadat et al. 2024).
# tests/test_shipped.py checks that the stored measurements still pick it. guidance_interval=EVERY_STEP with
# condition_annealing=None is plain classifier-free guidance.
DEFAULT_GUIDANCE_SCALE = 6.0
DEFAULT_GUIDANCE_INTERVAL = (0.0, 0.2)
DEFAULT_CONDITION_ANNEALING = (0.4, 0.9)
MAX_GUIDANCE_SCALE = 30.0


# --- training ------------------------------------------------------------------

@torch.no_grad()
def encode_latent_distribution(vae, images: torch.Tensor, batch_size: int = 1000):
    """The VAE's latent Gaussians for a dataset: images (N, 1, 28, 28) in [0, 1] -> (mean, std), each (N, C, 7, 7).

    Computed once before training; every step then draws a fresh latent z = mean + std * noise.
    """
    def mean_and_std(x):
        dist = vae.encode(x)
        return torch.cat([dist.mean, dist.std], dim=1)

    return batched(mean_and_std, images, batch_size).chunk(2, dim=1)


def ldm_training_loss(text_encoder, tokenizer, schedule: NoiseSchedule, scaling_factor: float,
                      make_caption, uncond_prob: float = 0.1):
    """The latent-diffusion objective; returns ``loss_fn(model, batch, generator)`` for ``train``.

    batch = (latent means (B, C, 7, 7), latent stds (B, C, 7, 7), labels (B,), attribute codes (B, 3)).
    ``make_caption(label, codes, generator) -> str`` writes a fresh caption for each digit; with
    probability ``uncond_prob`` it is replaced by the empty text, for classifier-free guidance.
    The text encoder is frozen: no gradient reaches it.
    """
    if not 0.0 <= uncond_prob < 1.0:
        raise ValueError(f"uncond_prob must be in [0, 1), got {uncond_prob}")

    def loss_fn(model, batch, generator):
        mean, std, labels, codes = batch
        device = mean.device
        eps = torch.randn(mean.shape, generator=generator).to(device)
        latents = (mean + std * eps) * scaling_factor                   # a sample of q(z | x), unit variance
        ids = tokenizer([make_caption(int(d), c, generator) for d, c in zip(labels, codes)])
        drop = torch.rand(len(ids), generator=generator) < uncond_prob
        ids[drop] = tokenizer.empty(int(drop.sum()))
        with torch.no_grad():
            context, _ = text_encoder(ids.to(device))
        t = torch.randint(0, schedule.num_train_timesteps, (len(ids),), generator=generator).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        noisy = schedule.q_sample(latents, t, noise)
        return F.mse_loss(model(noisy, t, encoder_hidden_states=context), noise)

    return loss_fn


# --- sampling ------------------------------------------------------------------

def guided_noise(noise_uncond: torch.Tensor, noise_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + guidance_scale * (cond - uncond). Both (B, C, H, W).

    guidance_scale 0 is the unconditional model, 1 the conditional one, > 1 goes past it.
    """
    return noise_uncond + guidance_scale * (noise_cond - noise_uncond)


def rescale_noise_cfg(noise_cfg: torch.Tensor, noise_cond: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """CFG rescale (Lin et al. 2024, eq. 15-16; ``diffusers``' name): a large guidance scale inflates the
    prediction's overall size, so scale each image's guided prediction (B, C, H, W) to the standard deviation of
    its conditional one, and mix ``guidance_rescale`` (in [0, 1]) of that with the plain guided prediction."""
    dims = list(range(1, noise_cfg.ndim))
    rescaled = noise_cfg * (noise_cond.std(dim=dims, keepdim=True) / noise_cfg.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1 - guidance_rescale) * noise_cfg


def anneal_condition(cond: torch.Tensor, t_fraction: float, condition_annealing, generator: torch.Generator):
    """CADS (Sadat et al. 2024, eq. 3-4, noise scale 1, full rescaling): the prompt's token embeddings cond (B, S, D)
    at noise level ``t_fraction`` (0 clean, 1 pure noise), blended with fresh noise.

    condition_annealing = (low, high): gamma = 1 below ``low`` (the prompt as it is), 0 above ``high`` (noise alone),
    linear between; the blend sqrt(gamma) cond + sqrt(1 - gamma) noise is then rescaled to each prompt's own mean and
    standard deviation, so the U-Net sees embeddings of the size it was trained on. None: the prompt unchanged.
    """
    if condition_annealing is None:
        return cond
    low, high = condition_annealing
    gamma = 1.0 if t_fraction <= low else 0.0 if t_fraction >= high else (high - t_fraction) / (high - low)
    if gamma == 1.0:
        return cond
    noise = torch.randn(cond.shape, generator=generator).to(cond.device)
    blend = math.sqrt(gamma) * cond + math.sqrt(1 - gamma) * noise
    dims = (1, 2)
    blend = (blend - blend.mean(dims, keepdim=True)) / blend.std(dims, keepdim=True)
    return blend * cond.std(dims, keepdim=True) + cond.mean(dims, keepdim=True)


def in_guidance_interval(timestep: int, guidance_interval, num_train_timesteps: int) -> bool:
    """Whether guidance applies at ``timestep``: guidance_interval = (low, high) as fractions of the noise
    timeline, 0 the clean end and 1 the pure-noise end; (0, 1) guides every step."""
    return in_interval(timestep, guidance_interval, num_train_timesteps)


def img2img_timesteps(timesteps: torch.Tensor, strength: float) -> torch.Tensor:
    """The timesteps img2img visits: the last ``int(len(timesteps) * strength)`` of the scheduler's (N,),
    the least noisy ones. Strength 1 runs them all (text-to-image); strength 0 none (the image comes back)."""
    check_float("strength", strength, 0.0, 1.0)
    keep = int(len(timesteps) * strength)
    return timesteps[len(timesteps) - keep:]


class LatentDiffusionPipeline:
    """Text-to-image (and image-to-image) with a text-conditioned UNet in the VAE's latent space.

    unet: ``UNet`` with ``context_dim`` = the text width; vae: ``ConvVAE``; text_encoder and
    tokenizer: from the CLIP of chapter 04. All three networks are used frozen.
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, num_train_timesteps: int = 1000,
                 beta_schedule: str = "linear", info: dict | None = None):
        self.unet, self.vae, self.text_encoder = unet.eval(), vae.eval(), text_encoder.eval()
        self.tokenizer = tokenizer
        self.num_train_timesteps, self.beta_schedule = num_train_timesteps, beta_schedule
        self.latent_shape = (vae.latent_channels, 7, 7)
        self.info = info or {}

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def encode_prompt(self, prompt) -> torch.Tensor:
        """A string or list of strings -> token embeddings (B, context_length, width); "" is the empty text."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        ids = torch.cat([self.tokenizer.empty(1) if p == "" else self.tokenizer([p]) for p in prompts])
        return self.text_encoder(ids.to(self.device))[0]

    def make_scheduler(self) -> DDIMScheduler:
        # Latents are not confined to [-1, 1] like pixels, so the x0 guess must not be clipped.
        return DDIMScheduler(self.num_train_timesteps, self.beta_schedule, clip_sample=False)

    @torch.no_grad()
    def __call__(self, prompt, num_inference_steps: int = 50, guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
                 seed: int = 0, negative_prompt=None, image: torch.Tensor | None = None, strength: float = 0.8,
                 num_images_per_prompt: int = 1, eta: float = 0.0, guidance_rescale: float = 0.0,
                 guidance_interval=DEFAULT_GUIDANCE_INTERVAL, condition_annealing=DEFAULT_CONDITION_ANNEALING,
                 callback=None, progress: bool = False,
                 output_type: str = "image") -> torch.Tensor:
        """Digits for ``prompt``: (B, 1, 28, 28) in [0, 1], B = number of prompts x ``num_images_per_prompt``.

        prompt: "a thick seven" or a list of prompts. negative_prompt: what to steer away from
        (replaces the empty text of guidance); one string, or one per prompt.
        image: (B, 1, 28, 28) in [0, 1] for img2img, one per prompt (or one prompt for all images);
        strength in [0, 1]: how much of the schedule to redo (0 = the image back, 1 = ignore it).
        seed fixes every random number. guidance_rescale in [0, 1]: CFG rescale (``rescale_noise_cfg``).
        guidance_interval (low, high), fractions of the noise timeline (0 clean, 1 pure noise): guide only
        the steps in it; the others use the conditional prediction alone, one U-Net pass instead of two. With very
        few steps the interval may hold none of them (3 steps visit t = 999, 666, 333): then nothing is guided.
        ``EVERY_STEP`` = (0, 1) is plain classifier-free guidance; the default guides where it pays (above).
        condition_annealing (low, high), fractions of the noise timeline, or None: CADS (``anneal_condition``),
        the prompt blended with noise above ``low`` and replaced by it above ``high``.
        callback(i, t, latents, pred_original_latents) runs after each step. output_type "latent" returns the (B, 4, 7, 7) latents instead of decoding them.
        """
        prompts, negatives = self.check_inputs(prompt, num_inference_steps, guidance_scale, seed, negative_prompt,
                                               image, strength, num_images_per_prompt, eta, output_type)
        check_float("guidance_rescale", guidance_rescale, 0.0, 1.0)
        guidance_interval = check_interval("guidance_interval", guidance_interval)
        if condition_annealing is not None:
            condition_annealing = check_interval("condition_annealing", condition_annealing)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [p for p in negatives for _ in range(num_images_per_prompt)]

        cond = self.encode_prompt(prompts)           # unknown words fail here, before any work
        uncond = self.encode_prompt(negatives) if guidance_scale != 1.0 else None

        scheduler = self.make_scheduler()
        scheduler.set_timesteps(num_inference_steps)
        timesteps = scheduler.timesteps if image is None else img2img_timesteps(scheduler.timesteps, strength)
        generator = torch.Generator().manual_seed(seed)
        latents = self.prepare_latents(len(prompts), generator, scheduler, timesteps,
                                       None if image is None else image.repeat_interleave(num_images_per_prompt, 0))

        for i, t in enumerate(tqdm(timesteps, desc="latent diffusion", disable=not progress, leave=False)):
            # at guidance_scale 1, or outside the interval, the unconditional half cancels: skip it
            do_guidance = uncond is not None and in_guidance_interval(int(t), guidance_interval,
                                                                      self.num_train_timesteps)
            cond_t = anneal_condition(cond, int(t) / (self.num_train_timesteps - 1), condition_annealing, generator)
            model_input = torch.cat([latents, latents]) if do_guidance else latents
            context = torch.cat([uncond, cond_t]) if do_guidance else cond_t
            t_batch = torch.full((len(model_input),), int(t), device=self.device)
            noise_pred = self.unet(model_input, t_batch, encoder_hidden_states=context)
            if do_guidance:
                noise_uncond, noise_cond = noise_pred.chunk(2)
                noise_pred = guided_noise(noise_uncond, noise_cond, guidance_scale)
                if guidance_rescale > 0:
                    noise_pred = rescale_noise_cfg(noise_pred, noise_cond, guidance_rescale)
            out = scheduler.step(noise_pred, int(t), latents, eta=eta, generator=generator)
            latents = out.prev_sample
            if callback is not None:
                callback(i, int(t), latents, out.pred_original_sample)
        return latents.cpu() if output_type == "latent" else self.decode_latents(latents)

    def check_inputs(self, prompt, num_inference_steps, guidance_scale, seed, negative_prompt, image, strength,
                     num_images_per_prompt, eta, output_type) -> tuple[list[str], list[str]]:
        """Every argument of ``__call__`` checked, with a sentence naming it; returns (prompts, negative prompts),
        one of each per image (a single prompt is repeated for a batch of img2img images)."""
        prompts = _check_prompts(prompt, "prompt")
        check_int("num_inference_steps", num_inference_steps, 1, self.num_train_timesteps)
        check_int("num_images_per_prompt", num_images_per_prompt, 1, 10_000)
        check_int("seed", seed, 0, MAX_SEED)
        check_float("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE_SCALE)
        check_float("strength", strength, 0.0, 1.0)
        check_float("eta", eta, 0.0, 1.0)
        if output_type not in ("image", "latent"):
            raise ValueError(f"output_type must be 'image' or 'latent', got {output_type!r}")
        if image is not None:
            check_digits(image, "image")
            if len(prompts) == 1:
                prompts = prompts * len(image)
            if len(prompts) != len(image):
                raise ValueError(f"give one prompt, or one per image: {len(prompts)} prompts for {len(image)} images")
        negatives = [""] * len(prompts) if negative_prompt is None else _check_prompts(negative_prompt, "negative_prompt")
        if len(negatives) == 1:
            negatives = negatives * len(prompts)
        if len(negatives) != len(prompts):
            raise ValueError(f"give one negative_prompt, or one per prompt ({len(prompts)}), not {len(negatives)}")
        return prompts, negatives

    def prepare_latents(self, batch_size: int, generator: torch.Generator, scheduler: DDIMScheduler,
                        timesteps: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The latents the loop starts from, (batch_size, 4, 7, 7): pure noise for text-to-image; for img2img
        the given digits' latents, noised to the first of ``timesteps`` (returned as they are if none is left)."""
        noise = torch.randn((batch_size, *self.latent_shape), generator=generator)
        if image is None:
            return noise.to(self.device)
        init = self.vae.encode(image.to(self.device)).mean * self.vae.scaling_factor
        if len(timesteps) == 0:
            return init                               # strength 0 (or too few steps): nothing to redo
        return scheduler.schedule.q_sample(init, int(timesteps[0]), noise.to(self.device))

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, 7, 7) -> digits (B, 1, 28, 28) in [0, 1] on the CPU."""
        return self.vae.decode(latents / self.vae.scaling_factor).clamp(0, 1).cpu()


@torch.no_grad()
def word_attention_maps(pipe: LatentDiffusionPipeline, prompt: str, seed: int = 0, num_inference_steps: int = 20,
                        guidance_scale: float = DEFAULT_GUIDANCE_SCALE):
    """Where each word of ``prompt`` was looked at while drawing one digit.

    Returns (image (1, 1, 28, 28), words: the prompt's tokens from <start> to <end>, then "<pad>" for all the
    padding positions together, maps (len(words), 7, 7)): the share of each latent position's cross-attention
    that went to each token, averaged over heads, layers (4 x 4 maps upsampled) and denoising steps. Drawn without
    condition annealing, so that every step attends to the prompt's own words. At every
    position the shares of all the words add up to 1, so the maps share one scale.
    """
    with record_attention(pipe.unet) as recorded:
        image = pipe(prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed,
                     condition_annealing=None)
    ids = pipe.tokenizer([prompt])[0]
    n_tokens = int(pipe.tokenizer.end_positions(ids[None])[0]) + 1
    total, calls = torch.zeros(n_tokens + 1, 8, 8), 0
    for weights in (w for layer_calls in recorded.values() for w in layer_calls):
        w = weights[-1].mean(0)                                # conditional half (last image), mean over heads
        w = torch.cat([w[:, :n_tokens], w[:, n_tokens:].sum(1, keepdim=True)], dim=1)   # all padding as one
        side = math.isqrt(w.shape[0])
        total += F.interpolate(w.T.reshape(n_tokens + 1, 1, side, side), size=(8, 8), mode="nearest")[:, 0]
        calls += 1
    words = [pipe.tokenizer.vocabulary[i] for i in ids[:n_tokens].tolist()] + ["<pad>"]
    return image, words, total[:, :7, :7] / calls


# --- argument checks: a learner's typo gets a sentence, not a traceback ------------

def _check_prompts(prompt, name: str) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {prompt!r}")
    for p in prompts:
        if not p.strip():
            raise ValueError(f"{name} {p!r} is empty; write what to draw, e.g. 'a thick seven' "
                             "(for the unconditional model use guidance_scale=0, guidance_interval=EVERY_STEP)")
    return list(prompts)

