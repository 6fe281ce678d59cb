"""Classifier-free guidance and two refinements, measured on the shipped LDM: python bench/guidance_bench.py

For each guidance setting in CONFIGS, per seed (0 and 1), by the course's protocol:

* 1,000 digits, 100 per prompt "a handwritten <digit>", against 1,000 held-out digits: Fréchet distance over the
  real-vs-real floor at the same size, precision/recall and class shares (``metrics.quality_report``);
* prompt accuracy: the share the shipped classifier reads as the asked digit;
* spread: within-class feature variance of the samples over that of real digits of the class
  (``metrics.within_class_spread``; 1.0 = as varied as real handwriting);
* thick/thin adherence: 50 digits for each of "a thick <d>" and "a thin <d>", the share on the asked side of
  the digit's thickness threshold (the CLIP's, the one the training captions used);
* seconds per digit, sampling only.

The settings (CONFIGS): plain CFG at several scales, guidance applied only in an interval of noise levels
(``guidance_interval``, Kynkäänniemi et al. 2024), CFG rescale (``guidance_rescale``, Lin et al. 2024) and
condition annealing (``condition_annealing``, CADS, Sadat et al. 2024).
Each (setting, seed) is stored as soon as it is measured; an interrupted run resumes. Writes
bench/results/guidance.json and .md.
"""

import argparse
import time

import torch

from course_lib import pipelines
from course_lib.captions import attribute_prompt, class_prompt
from course_lib.data import load_mnist
from course_lib.device import describe_device
from course_lib.ldm import (DEFAULT_CONDITION_ANNEALING, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_GUIDANCE_SCALE,
                            EVERY_STEP)
from course_lib.metrics import (classifier_features, load_classifier, predict, quality_report,
                                within_class_spread)
from course_lib.pretrained import CHECKPOINTS

from course_tools.bench import (GUIDANCE_FLOORS, add_output_arguments, guidance_row, guidance_settings, measure_seeds,
                                recommended_guidance, sampled_on, save_partial, span, stored_rows, write_results)

# The settings: (method, guidance scale, the other pipeline arguments). Intervals are fractions of the noise
# timeline (0 clean, 1 pure noise): the middle one is sigma from 0.34 to 6.2 on this schedule, a middle range like
# the intervals Kynkaenniemi et al. found for their EDM2 models;
# BANDS guide one fifth of the timeline each, at scale 3, to show where guidance buys accuracy and where it costs
# variety; the late one is the least noisy fifth. CADS adds condition annealing to it.
MIDDLE, LATE, CADS = (0.1, 0.6), (0.0, 0.2), (0.4, 0.9)
BANDS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.0)]
CONFIGS = ([("cfg", s, {"guidance_interval": EVERY_STEP}) for s in (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)]
           + [("interval 0.1-0.6", s, {"guidance_interval": MIDDLE}) for s in (1.5, 2.0, 3.0, 4.0, 6.0)]
           + [("rescale 0.7", s, {"guidance_rescale": 0.7, "guidance_interval": EVERY_STEP}) for s in (3.0, 6.0)]
           + [(f"interval {low:g}-{high:g}", 3.0, {"guidance_interval": (low, high)}) for low, high in BANDS]
           + [("interval 0-0.2", s, {"guidance_interval": LATE}) for s in (5.0, 6.0)]
           + [("interval 0-0.2 + CADS", s, {"guidance_interval": LATE, "condition_annealing": CADS})
              for s in (5.0, 6.0, 7.0)])
SEEDS = (0, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=1000, help="per seed, a tenth per digit")
    parser.add_argument("--attribute-samples", type=int, default=50, help="per word, digit and seed")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=250)
    add_output_arguments(parser, force=False)
    args = parser.parse_args()
    pipe, classifier = pipelines.load("ldm", device=args.device), load_classifier()
    heldout, pool = load_mnist("test"), load_mnist("train")
    per_digit = args.num_samples // 10
    identity = {"checkpoint_sha256": CHECKPOINTS["ldm"][1], "num_samples": args.num_samples, "steps": args.steps}
    # a stored row is reused only if it was measured with the same settings (each row records its own)
    done = stored_rows("guidance", identity, lambda r: (r["guidance_scale"], repr(r["settings"])), args.out)
    result = {**identity, "seeds": list(SEEDS), "checkpoint": pipe.info, "machine": describe_device(args.device),
              "rows": []}

    def save():
        save_partial("guidance", {**result, "rows": [r for r in done.values() if "seeds" in r]}, args.out)

    for method, scale, extra in CONFIGS:
        # every setting spelled out (condition annealing None, rescale 0 where a row does not use them, whatever the
        # pipeline's defaults), as the row records it
        stored = guidance_settings(**extra)
        settings = dict(num_inference_steps=args.steps, guidance_scale=scale, **stored)

        def draw(prompts, n_each, seed):
            """n_each digits per prompt in batches of about --batch-size; (images, seconds)."""
            per_call = max(1, args.batch_size // n_each)
            start = time.perf_counter()
            images = torch.cat([pipe(prompts[i:i + per_call], num_images_per_prompt=n_each, seed=1000 * seed + i,
                                     **settings) for i in range(0, len(prompts), per_call)])
            return images, time.perf_counter() - start

        def measure(seed):
            asked = torch.arange(10).repeat_interleave(per_digit)
            drawn = {}

            def generate(seed_, n):
                drawn["images"], drawn["seconds"] = draw([class_prompt(d) for d in range(10)], n // 10, seed_)
                return drawn["images"]
            report = quality_report(classifier, generate, heldout.images, pool.images, args.num_samples, (seed,))
            images = drawn["images"]
            reference = torch.randperm(len(heldout), generator=torch.Generator().manual_seed(seed))[:args.num_samples]
            spread = within_class_spread(classifier_features(classifier, images), asked,
                                         classifier_features(classifier, heldout.images[reference]),
                                         heldout.labels[reference])
            words = [("thick", +1), ("thin", -1)]
            styled, _ = draw([attribute_prompt(w, d) for w, _ in words for d in range(10)], args.attribute_samples,
                             seed + 100)
            digit = torch.arange(10).repeat_interleave(args.attribute_samples).repeat(2)
            side = torch.tensor([s for _, s in words]).repeat_interleave(10 * args.attribute_samples)
            measured = pipe.thresholds.sides(styled, digit)[:, 0]            # column 0: thickness
            return {**report, "accuracy": [(predict(classifier, images) == asked).float().mean().item()],
                    "spread": [spread], "thickness_adherence": [(measured == side).float().mean().item()],
                    "seconds_per_digit": [drawn["seconds"] / len(images)], "sampled_on": describe_device(args.device)}

        row = done.setdefault((scale, repr(stored)), {"method": method, "guidance_scale": scale, "settings": stored})
        row["method"] = method
        measure_seeds(row, SEEDS, measure, save)
        print(method, scale, "FD/floor", span(row["ratio"]), "accuracy", span(row["accuracy"], "{:.3f}"),
              "spread", span(row["spread"]), flush=True)
        result["rows"].append(row)
    print(write_results("guidance", result, markdown_table(result), args.out))


def markdown_table(result) -> str:
    rows = result["rows"]
    floor = [f for r in rows for f in r["floor"]]
    lines = [f"Shipped LDM, {result['steps']} DDIM steps; {result['num_samples']:,} digits per seed (a tenth per "
             f"\"a handwritten <digit>\"), seeds {result['seeds']}, each against {result['num_samples']:,} held-out "
             f"digits; ranges over the seeds; floor {span(floor, '{:.1f}')}. Spread: within-class variance of the "
             "samples over that of real digits (1 = as varied). Interval a-b: guidance only where a ≤ t / (T − 1) ≤ b (0: clean, 1: pure noise). "
             f"CADS: the prompt blended with noise above t / (T − 1) = {CADS[0]:g}, replaced by it above {CADS[1]:g}. "
             f"Drawn and timed (s / digit, sampling only) on {sampled_on(rows, unlabelled=result['machine'])}.", "",
             "| guidance | scale | FD / floor | prompt accuracy | spread | thick/thin adherence | precision | recall "
             "| s / digit |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['guidance_scale']:g} | {span(r['ratio'])} | "
                     f"{span(r['accuracy'], '{:.1%}')} | {span(r['spread'])} | {span(r['thickness_adherence'], '{:.1%}')}"
                     f" | {span(r['precision'])} | {span(r['recall'])} | {span(r['seconds_per_digit'], '{:.4f}')} |")
    return "\n".join(lines + ["", recommendation(result)]) + "\n"


def recommendation(result) -> str:
    """The sentence under the table: which row the default-choosing rule picks, and whether the pipeline uses it."""
    floors = ", ".join(f"{name.replace('_', ' ')} at least " + (f"{low:g}" if name == "spread" else f"{low:.1%}")
                       for name, low in GUIDANCE_FLOORS.items())
    best = recommended_guidance(result["rows"])
    if best is None:
        return f"No setting reaches {floors} on both seeds."
    default = guidance_row(result, DEFAULT_GUIDANCE_SCALE, DEFAULT_GUIDANCE_INTERVAL, DEFAULT_CONDITION_ANNEALING)
    return (f"Of the settings with {floors} on both seeds, {best['method']} at scale {best['guidance_scale']:g} "
            f"is closest to real digits ({span(best['ratio'])} × the floor, spread {span(best['spread'])}); "
            + ("it is the pipeline's default" if best is default else
               f"the pipeline's default is {default['method']} at scale {default['guidance_scale']:g}")
            + " (`course_lib.ldm`).")


if __name__ == "__main__":
    main()
