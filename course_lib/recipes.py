"""The recipes that produce the shipped checkpoints: model size, data, and training settings.

    >>> from course_lib.recipes import train_model
    >>> pipe, info = train_model("ddpm", steps=200, second_stage=False)   # what pipelines.load("ddpm") returns, freshly trained

``RECIPES`` is a plain dict, one ``Recipe`` per shipped model; ``train_model`` runs any of them
the same way (seed, device, the training pool, the one training loop, resumable checkpoints in
``runs/<name>/``, provenance) and hands the result to ``pipelines.assemble``, so a notebook's
"train from scratch" switch gets exactly the object ``pipelines.load`` gives. ``scripts/train.py``
is the command line around it; it runs the same recipes that made every shipped checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .captions import AttributeThresholds, attribute_codes, ldm_caption
from .clip import CLIP, clip_training_loss
from .data import load_mnist
from .ddpm import diffusion_loss
from .device import describe_device, get_device, seed_everything
from .flow import flow_matching_loss, reflow_loss, reflow_pairs
from .ldm import encode_latent_distribution, ldm_training_loss
from .metrics import MNISTClassifier, classifier_loss, predict
from .pipelines import assemble, load
from .pipelines import network as pipelines_network
from .pretrained import CHECKPOINTS, read_weights, sha256
from .schedule import NoiseSchedule
from .train import load_checkpoint, save_checkpoint, train
from .unet import UNet, deepen
from .vae import VAE, AutoEncoder, ConvVAE, autoencoder_loss, latent_scaling_factor, vae_loss

# The pixel-space U-Net of the DDPM's and the flow model's first stage: 0.69M parameters, about 0.28 s per training
# step of 64 on a 2-core CPU (float32). Their second stage (SECOND_STAGE) deepens it to two ResBlocks per level.
DDPM_UNET_CONFIG = dict(in_channels=1, out_channels=1, base_channels=16, channel_mults=(1, 2, 4),
                        num_res_blocks=1, attention_levels=(False, False, True))
# lr 1e-3 and a slow EMA: 8000 steps at lr 5e-4 gave good DDPM-1000 samples but a biased
# noise prediction that deterministic DDIM integrates faithfully (strokes thicken with more steps).
# prediction_type, base_channels (the U-Net's width), num_res_blocks (its depth) and time_sampling (how the training
# timesteps are drawn: ddpm.sample_timesteps) are settings too, so that a variant, e.g. on a GPU, is one command:
# scripts/train.py ddpm --device cuda --set batch_size=512 --set num_res_blocks=2
# input_perturbation: ddpm.diffusion_loss's gamma (0: none).
DDPM_TRAINING = dict(steps=12000, batch_size=64, lr=1e-3, warmup_steps=300, ema_decay=0.9995, seed=0,
                     prediction_type="epsilon", base_channels=DDPM_UNET_CONFIG["base_channels"],
                     num_res_blocks=DDPM_UNET_CONFIG["num_res_blocks"], time_sampling="uniform", input_perturbation=0.0)
# Flow matching (notebook 07): the same U-Net and the same training budget as the DDPM, so that the
# two are compared at equal training compute; only the path and the target differ. Noise levels are drawn
# logit-normal (SD3's choice, more of them mid-way): bench/time_sampling_bench.py measured it against uniform at
# a sixth of this budget (Euler-8 5.76-7.10 vs 7.44-9.05 x floor), and at full budget it took Euler-8 from
# 3.17-4.24 (the uniform model shipped before it) to 2.73-3.38 x floor (one stage, before the second existed).
FLOW_TRAINING = {**{k: v for k, v in DDPM_TRAINING.items() if k not in ("prediction_type", "input_perturbation")},
                 "time_sampling": "logit_normal"}
# A second stage for both pixel models (issue 16): from the first stage's EMA weights, on new batches (seed 1), with
# a fresh warm-up, cosine decay and an EMA that averages about its last tenth (1 - 10 / steps). It runs on a GPU
# (H200: 258 s for the flow model, 287 s for the DDPM, at once; scripts/gpu_session.py): batches of 1024 see 2.56M
# digits, 3.3 times the first stage's 768,000. On two CPU cores it takes hours: add precision="bfloat16" there (a probe
# of single steps of 1024 measured 2.5-3.6 s in bfloat16 against 10.6-11.3 s in float32).
# It also deepens the network: num_res_blocks=2, two ResBlocks per level instead of the first stage's one (0.99M
# parameters instead of 0.69M; a third slower to sample on two CPU threads: DDIM-50 took 0.113 s per digit against
# 0.085, the fastest of four passes of 100, interleaved). unet.deepen grows the trained network first, its new blocks
# starting as the identity, so the stage starts from the function the first stage learnt. Deeper, with 2,500 steps
# against the one-block networks' 2,850, the DDPM's DDIM-50 went from 1.39-1.54 to 1.27-1.45 x floor and the flow
# model's Heun-16 from 1.16-1.37 to 1.14-1.25 (1,000 digits, seeds 0 and 1; bench/results/ddpm_second_stages/ keeps
# the one-block DDPM's bench).
# Both models get the same stage, so they stay at equal training compute.
# ``train_model(name, first_stage=FILE)`` starts the stage from a first-stage checkpoint instead of training one;
# the shipped models started from the one-stage files shipped at commit e1b4a13
# (``git show e1b4a13:data/checkpoints/ddpm.safetensors``), whose SHA-256 ``FIRST_STAGES`` pins.
SECOND_STAGE = dict(steps=2500, batch_size=1024, lr=1e-3, warmup_steps=100, ema_decay=0.996, seed=1,
                    precision="float32", num_res_blocks=2)
# The DDPM's second stage also changes what it learns (issue 16): it predicts v (prediction_type="v_prediction") and
# draws its noise levels as the flow model does (time_sampling="logit_normal", about nine in ten below t = 500, where
# DDIM fell behind). Two such stages, predicting v or the noise, ran from the same first stage on an H200 on
# 2026-11-27, at once, each 2,850 steps of 1024 on the one-block network (scripts/gpu_session.py); at 1,000 digits and
# seeds 0 and 1, DDIM-50 measured 1.39-1.54 x floor predicting v and 1.47-1.78 predicting the noise (the DDPM shipped
# before them, noise with uniform levels: 1.51-1.70); the v model shipped until the deeper one above replaced it. The
# same stage on two CPU cores in bfloat16 (7,811 s) measured within 0.03 of the H200's on every DDIM and DPM-Solver
# row. The benches of the second stages that do not ship are in bench/results/ddpm_second_stages/.
DDPM_SECOND_STAGE = {**SECOND_STAGE, "prediction_type": "v_prediction", "time_sampling": "logit_normal"}
FIRST_STAGES = {"ddpm": "1efd1885737a95f0d2e9b5109d6958b91df1d9aec6cd8d42f1f488d1279ad93b",
                "flow": "6f47ab427f1be4934dee3a3499360623e04fb5985cc38fdb9946371928c0cbda"}
# Reflow (notebook 07): the shipped flow model, fine-tuned on its own (noise, digit) pairs, which it drew with
# Heun-16 (its best sampler) from noise seeded apart from every bench's. Extra compute on top of FLOW_TRAINING:
# the pairs and these steps, both recorded. A pilot (4,000 pairs, 600 steps) took Euler-8 from 3.17 to 2.94 x floor.
# The shipped one was trained on a GPU right after its teacher (scripts/gpu_session.py): 750 steps of 256, as many
# pairs seen as 3,000 steps of 64.
REFLOW_TRAINING = dict(steps=750, batch_size=256, lr=4e-4, warmup_steps=50, ema_decay=0.98667, seed=0,
                       time_sampling="uniform", num_pairs=12000, pair_steps=16, pair_sampler="heun", pair_seed=12345)
# The three autoencoders of notebook 03: name -> (model class, config, training settings).
# kl_weight None means no KL term (the plain autoencoder).
AUTOENCODERS = {
    "ae2d": (AutoEncoder, dict(latent_dim=2, hidden=(400, 200)),
             dict(steps=8000, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.998, seed=0, kl_weight=None)),
    # 3000 steps gave a 10-NN accuracy of 78% on the held-out 2-D means in a pilot; the shipped 8000-step model's is in
    # bench/results/vae.md (81.7%).
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
# 20,000 steps: twice the first shipped model's 10,000, after which the model followed its prompt without guidance
# 91.5-93.6% of the time instead of 87-89% (bench/guidance_bench.py at scale 1, two seeds).
LDM_TRAINING = dict(steps=20000, batch_size=128, lr=1e-3, warmup_steps=300, ema_decay=0.999, uncond_prob=0.1,
                    seed=0)
CLASSIFIER_TRAINING = dict(steps=3000, batch_size=128, lr=2e-3, weight_decay=5e-4, warmup_steps=100,
                           ema_decay=0.995, seed=0)


@dataclass(frozen=True)
class Recipe:
    """How one shipped model is made.

    network(settings): builds the fresh, untrained network (most ignore the settings; the DDPM's width is one).
    training: the settings of ``course_lib.train.train`` (steps, batch_size, lr, warmup_steps, ema_decay,
        seed, optionally weight_decay) and any the loss needs (kl_weight, uncond_prob).
    prepare(settings, device, run_dir) -> (dataset, loss_fn, info): what ``train`` trains on, and facts to record
        (run_dir: the run's folder, for anything worth keeping between resumed sessions).
    finish(model, settings) -> info: measured on the trained model (held-out accuracy, a scaling factor).
    second_stage: settings that replace ``training``'s for a second run of the same loop, started from the
        first run's EMA weights (fresh optimizer, warm-up and EMA); None for one stage.
    """

    network: Callable[[dict], nn.Module]
    training: dict
    prepare: Callable
    finish: Callable | None = None
    second_stage: dict | None = None


def _pool():
    """The training pool as (images, labels)."""
    pool = load_mnist("train")
    return (pool.images, pool.labels)


def _pixel_unet(settings):
    """The pixel-space U-Net the DDPM and the flow model share, at the width and depth the settings ask for."""
    return UNet(**{**DDPM_UNET_CONFIG, "base_channels": settings["base_channels"],
                   "num_res_blocks": settings["num_res_blocks"]})


def _prepare_ddpm(settings, device, run_dir):
    loss_fn = diffusion_loss(NoiseSchedule("linear"), settings["prediction_type"], settings["time_sampling"],
                             settings["input_perturbation"])
    return _pool(), loss_fn, {"schedule": "linear, T=1000"}


def _prepare_flow(settings, device, run_dir):
    return _pool(), flow_matching_loss(settings["time_sampling"]), {"path": "x = (1 - sigma) x0 + sigma noise"}


def _shipped_flow(settings):
    """Reflow starts from the shipped flow model's weights, trainable again."""
    return pipelines_network(load("flow", device="cpu")).requires_grad_(True)


def _prepare_reflow(settings, device, run_dir):
    """The teacher's (noise, digit) pairs, drawn once and kept in the run's folder (a resumed run reuses them)."""
    teacher_sha = CHECKPOINTS["flow"][1][:12]
    cache = run_dir / (f"pairs-{teacher_sha}-{settings['num_pairs']}-{settings['pair_sampler']}"
                       f"{settings['pair_steps']}-seed{settings['pair_seed']}.pt")
    if cache.exists():
        state = load_checkpoint(cache)
        pairs, seconds = (state["noise"], state["x0"]), float(state["seconds"])
    else:
        start = time.perf_counter()
        pairs = reflow_pairs(load("flow", device=device), settings["num_pairs"], settings["pair_steps"],
                             settings["pair_sampler"], seed=settings["pair_seed"])
        seconds = time.perf_counter() - start
        save_checkpoint(cache, noise=pairs[0], x0=pairs[1], seconds=seconds)
    return pairs, reflow_loss(settings["time_sampling"]), {
        "data": f"pairs drawn by the shipped flow model (which trained on {load_mnist('train').source})",
        "teacher": f"flow.safetensors sha256 {teacher_sha}",
        "pairs": f"{settings['num_pairs']:,} pairs, {settings['pair_sampler']}-{settings['pair_steps']}, "
                 f"{round(seconds):,} s on {_hardware(torch.device(device))}"}


def _prepare_classifier(settings, device, run_dir):
    return _pool(), classifier_loss, {}


def _finish_classifier(model, settings):
    heldout = load_mnist("test")
    return {"heldout_accuracy": round((predict(model, heldout.images) == heldout.labels).float().mean().item(), 5)}


def _prepare_autoencoder(settings, device, run_dir):
    loss_fn = autoencoder_loss if settings["kl_weight"] is None else vae_loss(settings["kl_weight"])
    return _pool(), loss_fn, {}


def _finish_spatial_vae(model, settings):
    """Measure the latent scaling factor on the training pool and store it in the model (SD's 0.18215)."""
    scale = latent_scaling_factor(model, load_mnist("train").images, torch.Generator().manual_seed(settings["seed"]))
    model.latent_scale.fill_(scale)
    return {"scaling_factor": round(scale, 5)}


def _prepare_clip(settings, device, run_dir):
    """Captioned digits: the attribute thresholds (per-class terciles) are fitted on the training pool and
    recorded, so captions and attribute checks can be reproduced from the checkpoint."""
    images, labels = _pool()
    thresholds = AttributeThresholds.fit(images, labels)
    return ((images, labels, attribute_codes(thresholds, images, labels)), clip_training_loss,
            {"thresholds": {"low": thresholds.low, "high": thresholds.high}})


def _prepare_ldm(settings, device, run_dir):
    """The shipped VAE and CLIP text encoder, frozen. The training pool is encoded once into latent Gaussians;
    each step draws latents from them, writes fresh captions (with the CLIP's attribute thresholds) and drops
    ``uncond_prob`` of them to the empty text, for classifier-free guidance."""
    vae, clip = load("vae", device="cpu"), load("clip", device="cpu")
    images, labels = _pool()
    mean, std = encode_latent_distribution(vae, images)
    loss_fn = ldm_training_loss(clip.text_encoder.to(device), clip.tokenizer, NoiseSchedule("linear"),
                                vae.scaling_factor, ldm_caption, settings["uncond_prob"])
    dataset = (mean, std, labels, attribute_codes(clip.thresholds, images, labels))
    return dataset, loss_fn, {"schedule": "linear, T=1000", "vae_scaling_factor": round(vae.scaling_factor, 5)}


RECIPES = {
    "classifier": Recipe(lambda settings: MNISTClassifier(), CLASSIFIER_TRAINING, _prepare_classifier, _finish_classifier),
    "ddpm": Recipe(_pixel_unet, DDPM_TRAINING, _prepare_ddpm, second_stage=DDPM_SECOND_STAGE),
    "flow": Recipe(_pixel_unet, FLOW_TRAINING, _prepare_flow, second_stage=SECOND_STAGE),
    "reflow": Recipe(_shipped_flow, REFLOW_TRAINING, _prepare_reflow),
    **{name: Recipe(lambda settings, model_class=model_class, config=config: model_class(**config), training,
                    _prepare_autoencoder, _finish_spatial_vae if model_class is ConvVAE else None)
       for name, (model_class, config, training) in AUTOENCODERS.items()},
    "clip": Recipe(lambda settings: CLIP(**CLIP_CONFIG), CLIP_TRAINING, _prepare_clip),
    "ldm": Recipe(lambda settings: UNet(**LDM_UNET_CONFIG), LDM_TRAINING, _prepare_ldm),
}
TRAIN_ARGUMENTS = ("steps", "batch_size", "lr", "weight_decay", "warmup_steps", "ema_decay", "seed", "precision")
# what each stage's record in a checkpoint keeps (the loss's settings too: the DDPM's stages learn different targets)
STAGE_KEYS = ("steps", "batch_size", "lr", "warmup_steps", "ema_decay", "seed", "precision", "prediction_type",
              "time_sampling", "input_perturbation", "num_res_blocks", "train_seconds", "hardware")


def train_model(name: str, run_dir: str | Path | None = None, *, device: torch.device | str | None = None,
                progress: bool = True, second_stage: bool | dict = True, first_stage: str | Path | None = None,
                **overrides):
    """Train shipped model ``name`` by its recipe; returns (ready-to-use object, info dict).

    The object is what ``pipelines.load(name)`` returns (a pipeline, or the model with ``.info``),
    built from the EMA weights. ``overrides``: any key of the recipe's settings (steps, batch_size, ...),
    for its first stage. A recipe with a second stage (``Recipe.second_stage``: the pixel DDPM's and flow model's
    ``SECOND_STAGE``) runs it afterwards unless ``second_stage=False``; a dict changes its settings, e.g.
    ``second_stage={"steps": 20}``.
    ``first_stage``: a checkpoint file to start the second stage from instead of training the first (its
    SHA-256 is recorded). An interrupted run resumes from ``run_dir`` (default
    ``runs/<name>``; state.pt, then second_stage.pt) when called again.
    """
    if name not in RECIPES:
        raise ValueError(f"no recipe called {name!r}; choose one of {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    unknown = sorted(set(overrides) - set(recipe.training))
    if unknown:
        raise ValueError(f"{name}'s recipe has no setting {', '.join(map(repr, unknown))}; "
                         f"it has {', '.join(recipe.training)}")
    two_stages = recipe.second_stage is not None and second_stage is not False
    unknown = sorted(set(second_stage) - set(recipe.second_stage or {})) if isinstance(second_stage, dict) else []
    if unknown:
        raise ValueError(f"{name}'s second stage has no setting {', '.join(map(repr, unknown))}; "
                         f"it has {', '.join(recipe.second_stage or {}) or 'none: the recipe has one stage'}")
    if first_stage is not None and not two_stages:
        raise ValueError(f"first_stage= starts a second stage, and {name}'s recipe has none here; "
                         "leave first_stage out" + ("" if recipe.second_stage is None else " or keep second_stage=True"))
    settings = {**recipe.training, **overrides}
    device = torch.device(device) if device is not None else get_device()
    run_dir = Path(run_dir or f"runs/{name}")
    if first_stage is None:
        model, info = _run_stage(name, recipe, settings, recipe.network, device, run_dir / "state.pt", progress)
    else:
        tensors, _, info = read_weights(first_stage)
        model = recipe.network({**settings, **{k: v for k, v in info.items() if k in settings}})  # its own depth
        try:
            model.load_state_dict(tensors)
        except RuntimeError as err:
            raise ValueError(f"{first_stage} does not hold a {name} network of this recipe's shape "
                             f"({str(err).splitlines()[0]}); pass a first-stage checkpoint of {name}") from err
        info = {**info, "checkpoint_sha256": sha256(first_stage)}
    if two_stages:
        first = info
        settings = {**settings, **recipe.second_stage, **(second_stage if isinstance(second_stage, dict) else {})}
        model, info = _run_stage(name, recipe, settings, lambda s, base=model: _deepened(base, s).requires_grad_(True),
                                 device, run_dir / "second_stage.pt", progress)
        stages = [{k: stage[k] for k in (*STAGE_KEYS, "checkpoint_sha256") if k in stage} for stage in (first, info)]
        info = {**info, "steps": sum(s["steps"] for s in stages),
                "train_seconds": sum(s["train_seconds"] for s in stages), "stages": stages}
    info["script"] = f"scripts/train.py {name}"
    if recipe.finish is not None:
        info.update(recipe.finish(model.cpu(), settings))
    return assemble(name, model, info, device), info


def _deepened(model, settings):
    """The first stage's network, grown (``unet.deepen``) to the second stage's ``num_res_blocks`` if that is more."""
    while model.config["num_res_blocks"] < settings["num_res_blocks"]:
        model = deepen(model)
    return model


def _run_stage(name, recipe, settings, network, device, state_path, progress):
    """One run of the training loop by ``settings``, resumable from ``state_path``; returns (EMA model, info)."""
    seed_everything(settings["seed"])
    dataset, loss_fn, info = recipe.prepare(settings, device, state_path.parent)
    result = train(network(settings), loss_fn, dataset, **{k: settings[k] for k in TRAIN_ARGUMENTS if k in settings},
                   checkpoint_path=state_path, checkpoint_every=250, device=device,
                   progress=progress, desc=name)
    return result.ema_model, {
        **settings, "data": load_mnist("train").source, **info, "steps": result.steps_done,
        "train_seconds": round(result.seconds), "hardware": _hardware(device),
        "final_loss_avg100": round(sum(result.losses[-100:]) / len(result.losses[-100:]), 5)}


def _hardware(device: torch.device) -> str:
    return f"{describe_device(device)}, device {device}"
