"""Benchmark the shipped latent-diffusion pipeline: python bench/ldm_bench.py

Everything is judged by models that never saw the held-out digits: the shipped classifier
(trained on the training pool) reads the digit, the caption measure (``stroke_thickness``,
with the CLIP's per-digit thresholds) reads the style.

1. Prompt accuracy: "a handwritten <digit>", --samples-per-digit (100) for each digit, at the default
   guidance and 50 DDIM steps: the share the classifier reads as the asked digit.
2. Attribute adherence: "a thick <d>" and "a thin <d>", --attribute-samples (100) each: mean stroke
   width of both, and the share on the asked side of the digit's thickness threshold.
3. Pixel space vs latent space in the same run, same 50 steps, same batch: sampling seconds per image
   and training throughput of the shipped pixel DDPM and the shipped latent UNet, and of the latent
   UNet's own architecture run on 28 x 28 pixels (the same network, only the space changes).

Quality against real digits (Fréchet distance over the floor, spread) and the guidance scan are
bench/guidance_bench.py's, by the course's two-seed protocol.

Writes bench/results/ldm.json and ldm.md and the README table between <!-- bench:ldm --> markers.
"""

import argparse
import time
from pathlib import Path

import torch

from course_lib import pipelines
from course_lib.captions import (DIGIT_WORDS, attribute_codes, attribute_prompt, class_prompt, ldm_caption,
                                 stroke_thickness)
from course_lib.data import load_mnist
from course_lib.device import describe_device
from course_lib.ddpm import diffusion_loss
from course_lib.ldm import (DEFAULT_CONDITION_ANNEALING, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_GUIDANCE_SCALE, EVERY_STEP,
                            encode_latent_distribution, ldm_training_loss)
from course_lib.metrics import load_classifier, predict
from course_lib.pretrained import CHECKPOINTS
from course_lib.recipes import LDM_UNET_CONFIG
from course_lib.schedule import NoiseSchedule
from course_lib.train import seconds_per_step
from course_lib.unet import UNet

from course_tools.bench import RESULTS, span, write_results


def generate(pipe, prompts, n_each, batch_size, seed, **kwargs):
    """n_each images per prompt, in batches; returns (images (len(prompts) * n_each, 1, 28, 28), seconds)."""
    images, start = [], time.perf_counter()
    per_call = max(1, batch_size // n_each) if n_each < batch_size else 1
    for i in range(0, len(prompts), per_call):
        group = prompts[i:i + per_call]
        for j in range(0, n_each, batch_size):
            images.append(pipe(group, num_images_per_prompt=min(batch_size, n_each - j), seed=seed + 1000 * i + j,
                               **kwargs))
    return torch.cat(images), time.perf_counter() - start


def thickness_adherence(pipe, n, batch_size, seed, **kwargs):
    """Per digit: mean stroke width of "a thick <d>" and "a thin <d>" and the share on the asked side."""
    rows = []
    for d in range(10):
        thick, _ = generate(pipe, [attribute_prompt("thick", d)], n, batch_size, seed + 17 * d, **kwargs)
        thin, _ = generate(pipe, [attribute_prompt("thin", d)], n, batch_size, seed + 17 * d + 5, **kwargs)
        side = pipe.thresholds.side
        rows.append({"digit": d, "thick_width": stroke_thickness(thick).mean().item(),
                     "thin_width": stroke_thickness(thin).mean().item(),
                     "thick_on_side": (side("thickness", thick, d) == 1).float().mean().item(),
                     "thin_on_side": (side("thickness", thin, d) == -1).float().mean().item()})
    return rows


def training_throughput(model, loss_fn, batch, steps=20):
    """Images per second of forward + backward + AdamW step on one repeated batch."""
    return len(batch[0]) / seconds_per_step(model, loss_fn, batch, steps)


@torch.no_grad()
def sampling_seconds(unet, shape, context, steps, guidance):
    """Seconds per image of ``steps`` UNet evaluations (doubled batch with guidance), as the pipelines run them."""
    x = torch.randn(shape)
    start = time.perf_counter()
    for t in torch.linspace(999, 0, steps).long():
        model_input = torch.cat([x, x]) if guidance else x
        kwargs = {} if context is None else {"encoder_hidden_states": torch.cat([context, context]) if guidance else context}
        unet(model_input, torch.full((len(model_input),), int(t)), **kwargs)
    return (time.perf_counter() - start) / shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples-per-digit", type=int, default=100)
    parser.add_argument("--attribute-samples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (odd: the median is one of them)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    pipe = pipelines.load("ldm", device="cpu")
    ddpm = pipelines.load("ddpm", device="cpu")
    classifier = load_classifier()
    train = load_mnist("train")
    digits = torch.arange(10)
    common = dict(num_inference_steps=args.steps)

    # 1. prompt accuracy at the default guidance
    prompts = [class_prompt(d) for d in range(10)]
    images, seconds = generate(pipe, prompts, args.samples_per_digit, args.batch_size, args.seed, **common)
    asked = digits.repeat_interleave(args.samples_per_digit)
    correct = predict(classifier, images) == asked
    per_digit = [correct[asked == d].float().mean().item() for d in range(10)]
    accuracy = {"guidance_scale": DEFAULT_GUIDANCE_SCALE, "guidance_interval": list(DEFAULT_GUIDANCE_INTERVAL),
                "condition_annealing": list(DEFAULT_CONDITION_ANNEALING), "samples": len(images),
                "accuracy": correct.float().mean().item(), "per_digit": per_digit,
                "seconds_per_image": seconds / len(images)}
    print("prompt accuracy", accuracy)

    # 2. thickness adherence at the default guidance
    adherence = thickness_adherence(pipe, args.attribute_samples, args.batch_size, args.seed, **common)
    print("thickness", adherence)

    # 3. pixel space vs latent space: same steps, same batch, same run. The four samplers are timed in turn, in
    # five rounds; the speed-up is the median of the five rounds' ratios (each ratio from samplers run back to back,
    # so a slow spell of this shared two-core machine, which can cost 25%, slows both sides), with their range.
    n = args.batch_size
    latent_prompts = [class_prompt(d) for d in range(10) for _ in range(n // 10)]
    samplers = {"pixel": lambda: ddpm(batch_size=n, num_inference_steps=args.steps, sampler="ddim", seed=args.seed),
                "default": lambda: pipe(latent_prompts, seed=args.seed, **common),
                "guidance_1": lambda: pipe(latent_prompts, seed=args.seed, guidance_scale=1.0, **common),
                "every_step": lambda: pipe(latent_prompts, seed=args.seed, guidance_interval=EVERY_STEP, **common)}
    samplers["pixel"]()                                                                   # warm-up
    rounds = {name: [] for name in samplers}
    for _ in range(args.rounds):
        for name, run in samplers.items():
            start = time.perf_counter()
            run()
            rounds[name].append((time.perf_counter() - start) / n)
    median = lambda values: sorted(values)[len(values) // 2]
    ratios = lambda a, b: [x / y for x, y in zip(rounds[a], rounds[b])]
    pixel_seconds, latent_seconds = median(rounds["pixel"]), median(rounds["default"])
    latent_seconds_no_guidance, latent_seconds_every_step = median(rounds["guidance_1"]), median(rounds["every_step"])

    vae, clip = pipelines.load("vae", device="cpu"), pipelines.load("clip", device="cpu")
    text = clip.text_encoder(clip.tokenizer(["a handwritten seven"] * n))[0].detach()
    pixel_twin = UNet(**{**LDM_UNET_CONFIG, "in_channels": 1, "out_channels": 1})   # same network, pixel space
    twin_n = 40                                       # the pixel-space twin is slow: time fewer images
    twin_rounds = [sampling_seconds(pixel_twin.eval(), (twin_n, 1, 28, 28), text[:twin_n], args.steps, True)
                   for _ in range(3)]                                                  # timed alone, three rounds
    twin_seconds = median(twin_rounds)

    batch = 64
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:batch]
    schedule = NoiseSchedule("linear")
    pixel_rate = training_throughput(UNet(**ddpm.unet.config), diffusion_loss(schedule),     # the shipped network
                                     (train.images[pick], train.labels[pick]))
    mean, std = encode_latent_distribution(vae, train.images[pick])
    codes = attribute_codes(clip.thresholds, train.images[pick], train.labels[pick])
    ldm_loss = ldm_training_loss(clip.text_encoder, clip.tokenizer, schedule, vae.scaling_factor, ldm_caption)
    latent_rate = training_throughput(UNet(**LDM_UNET_CONFIG), ldm_loss, (mean, std, train.labels[pick], codes))

    def twin_loss(model, batch_, generator):
        x0 = batch_[0] * 2 - 1
        t = torch.randint(0, 1000, (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        return torch.nn.functional.mse_loss(model(schedule.q_sample(x0, t, noise), t, text[:len(x0)]), noise)

    twin_rate = training_throughput(pixel_twin.train(), twin_loss, (train.images[pick],), steps=5)
    params = lambda m: sum(p.numel() for p in m.parameters())
    comparison = {
        "steps": args.steps, "batch": n, "twin_batch": twin_n,
        "pixel_ddpm": {"params": params(ddpm.unet), "seconds_per_image": pixel_seconds,
                       "train_images_per_second": pixel_rate},
        "latent": {"params": params(pipe.unet), "seconds_per_image": latent_seconds,
                   "seconds_per_image_guidance_1": latent_seconds_no_guidance,
                   "seconds_per_image_every_step": latent_seconds_every_step,
                   "train_images_per_second": latent_rate},
        "latent_unet_on_pixels": {"params": params(pixel_twin), "seconds_per_image": twin_seconds,
                                  "train_images_per_second": twin_rate},
    }
    comparison["rounds"] = {**rounds, "twin": twin_rounds}                             # s / image, every round
    default_ratios = ratios("pixel", "default")
    comparison["speedup"] = median(default_ratios)
    comparison["speedup_range"] = [min(default_ratios), max(default_ratios)]
    comparison["speedup_guidance_1"] = median(ratios("pixel", "guidance_1"))
    comparison["speedup_same_network"] = twin_seconds / latent_seconds_every_step     # both: medians, two passes a step
    print(comparison)

    result = {"prompt_accuracy": accuracy, "thickness": adherence, "comparison": comparison,
              "checkpoint": pipe.info, "recipe": CHECKPOINTS["ldm"][2],
              "machine": describe_device()}
    print(write_results("ldm", result, markdown_table(result), args.out))


def markdown_table(r) -> str:
    a, c = r["prompt_accuracy"], r["comparison"]
    lowest = [DIGIT_WORDS[d] for d in range(10) if a["per_digit"][d] == min(a["per_digit"])]
    guided = (f"guidance {a['guidance_scale']:g} in the interval {tuple(a['guidance_interval'])}, condition annealing "
              f"{tuple(a['condition_annealing'])} (the default)")
    lines = [f"Prompt accuracy, \"a handwritten <digit>\", {a['samples'] // 10} samples per digit, {guided}, "
             f"{c['steps']} DDIM steps: **{100 * a['accuracy']:.1f}%** read as the asked digit "
             f"by the shipped classifier (lowest: {', '.join(lowest)}, {100 * min(a['per_digit']):.0f}%"
             f"{' each' if len(lowest) > 1 else ''}).", "",
             "| digit | stroke width, \"a thick …\" | stroke width, \"a thin …\" | thick on the thick side | thin on the thin side |",
             "|---|---|---|---|---|"]
    for row in r["thickness"]:
        lines.append(f"| {DIGIT_WORDS[row['digit']]} | {row['thick_width']:.2f} px | {row['thin_width']:.2f} px | "
                     f"{100 * row['thick_on_side']:.0f}% | {100 * row['thin_on_side']:.0f}% |")
    p, lat, twin = c["pixel_ddpm"], c["latent"], c["latent_unet_on_pixels"]
    lines += ["", f"Pixel space vs latent space, {c['steps']} DDIM steps, batch {c['batch']} (the slow pixel-space twin: "
              f"{c['twin_batch']}), same run on {r['machine']}; the median of {len(c['rounds']['pixel'])} interleaved rounds (the "
              f"twin: of {len(c['rounds']['twin'])} rounds timed on their own):", "",
              "| model | parameters | s / image | training images / s |", "|---|---|---|---|",
              f"| pixel DDPM (1 × 28 × 28, unconditional) | {p['params']:,} | {p['seconds_per_image']:.4f} | "
              f"{p['train_images_per_second']:.0f} |",
              f"| latent diffusion (4 × 7 × 7), {guided} | {lat['params']:,} | "
              f"{lat['seconds_per_image']:.4f} | {lat['train_images_per_second']:.0f} |",
              f"| latent diffusion, guidance {a['guidance_scale']:g} at every step (two UNet passes per step) | "
              f"{lat['params']:,} | {lat['seconds_per_image_every_step']:.4f} | – |",
              f"| latent diffusion, guidance 1 (one UNet pass per step) | {lat['params']:,} | "
              f"{lat['seconds_per_image_guidance_1']:.4f} | – |",
              f"| the latent UNet's network on 28 × 28 pixels (untrained; timing only), two passes per step | "
              f"{twin['params']:,} | {twin['seconds_per_image']:.4f} | {twin['train_images_per_second']:.0f} |",
              "", f"At its default guidance, latent sampling is **{c['speedup']:.1f}×** faster per image than the pixel "
              f"DDPM's DDIM at the same steps (the median of the rounds' ratios; {span(c['speedup_range'], '{:.1f}')}× over "
              f"the rounds; {c['speedup_guidance_1']:.1f}× at guidance 1, the same one UNet pass per step). Guided at every step, it is **{c['speedup_same_network']:.0f}×** faster than the same network on "
              "pixels with the same two passes per step. Quality against real digits, and the guidance scan, are measured by "
              "`bench/guidance_bench.py` (below).",
              "", f"Checkpoint: {r['checkpoint'].get('steps', '?')} training steps, "
              f"{r['checkpoint'].get('train_seconds', '?')} s on {r['checkpoint'].get('hardware', '?')}; "
              f"recipe `{r['recipe']}`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
