"""Predict the noise, x0 or v? The same network, data and budget, three targets: python bench/parameterisation_bench.py

Trains the shipped DDPM's U-Net (``recipes.DDPM_UNET_CONFIG``) three times by the "ddpm" recipe, changing only
``prediction_type`` ("epsilon", "sample", "v_prediction"): the same seed, so the same batches, timesteps and
noise; --steps each (default 2,000 of 64, a sixth of the shipped model's budget, so that the three fit in
under an hour on two CPU cores), with a faster EMA (--ema-decay 0.995: the recipe's 0.9995 averages over
2,000 steps, which would still hold a third of the random initial weights after 2,000). Runs are resumable (runs/param-<type>/). Each is then measured by the
course's protocol (``metrics.quality_report``: 1,000 samples per seed, seeds 0 and 1, floor at the same size)
with DDIM at 10 and 50 steps and ancestral DDPM at 50. Each (model, sampler, seed) is stored as soon as it is
measured, so a run resumes where it stopped. Writes bench/results/parameterisation.json and .md.
"""

import argparse
import platform
from pathlib import Path

import torch

from course_lib.data import load_mnist
from course_lib.metrics import load_classifier, quality_report
from course_lib.recipes import train_model

from course_tools.bench import ROOT, measure_seeds, sampling, save_partial, span, stored_rows, write_results

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SAMPLERS = [("ddim", 10), ("ddim", 50), ("ddpm", 50)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per model")
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250, help="sampling batch")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    classifier = load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images
    identity = {"training_steps": args.steps, "ema_decay": args.ema_decay, "num_samples": args.num_samples}
    done = stored_rows("parameterisation", identity, lambda r: (r["prediction_type"], r["sampler"], r["steps"]),
                       args.out)
    result = {**identity, "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads", "rows": []}

    def save():
        save_partial("parameterisation", {**result, "rows": [r for r in done.values() if "seeds" in r]}, args.out)

    for prediction_type in PREDICTION_TYPES:
        pipe, info = train_model("ddpm", args.runs / f"param-{prediction_type}", device="cpu",
                                 steps=args.steps, ema_decay=args.ema_decay, prediction_type=prediction_type)
        result["batch_size"] = info["batch_size"]
        for sampler, steps in SAMPLERS:
            row = done.setdefault((prediction_type, sampler, steps),
                                  {"prediction_type": prediction_type, "sampler": sampler, "steps": steps})
            generate = sampling(pipe, args.batch_size, num_inference_steps=steps, sampler=sampler)
            measure_seeds(row, (0, 1), lambda seed: quality_report(classifier, generate, heldout, pool,
                                                                   args.num_samples, seeds=(seed,)), save)
            row.update(train_seconds=info["train_seconds"], final_loss_avg100=info["final_loss_avg100"])
            result["rows"].append(row)
            print(prediction_type, sampler, steps, span(row["ratio"]), flush=True)
    print(write_results("parameterisation", result, markdown_table(result), args.out))


def markdown_table(result) -> str:
    first = result["rows"][0]
    lines = [f"The shipped DDPM's U-Net trained {result['training_steps']:,} steps of {result['batch_size']} per "
             f"target (same seed, batches, timesteps and noise); {first['num_samples']:,} samples per seed, seeds "
             f"{first['seeds']}, ranges over the seeds; floor {span(first['floor'], '{:.1f}')}. "
             f"On {result['machine']}.", "",
             "| network predicts | sampler | steps | Fréchet distance / floor | precision | recall | "
             "smallest / largest class share |", "|---|---|---|---|---|---|---|"]
    names = {"epsilon": "noise ε", "sample": "clean image x0", "v_prediction": "velocity v"}
    for r in result["rows"]:
        lines.append(f"| {names[r['prediction_type']]} | {r['sampler'].upper()} | {r['steps']} | {span(r['ratio'])} | "
                     f"{span(r['precision'])} | {span(r['recall'])} | {span(r['min_class_share'], '{:.1%}')} / "
                     f"{span(r['max_class_share'], '{:.1%}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
