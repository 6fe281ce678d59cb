"""Benchmark the shipped DDPM: python bench/ddpm_bench.py [--num-samples N]

For DDPM with 1000 steps and DDIM with 100/50/20/10 steps, generate N digits and
measure on the held-out set, with the shipped classifier:

* classifier-FID to the held-out digits, next to the real-vs-real floor
  (N training-pool digits vs the same held-out digits: equal sample sizes, so equal bias);
* class coverage: the share of samples the classifier puts in each digit class. With 200
  samples one class's share has a standard error of about 2 points, too coarse for a 7-13%
  target, so DDIM-50 (the sampler the course recommends) is also counted over
  --coverage-samples (1,000 by default; its FID still uses the first N, to match the floor);
* seconds per image on this machine.

Writes bench/results/ddpm.json and bench/results/ddpm.md, and refreshes the table
between the <!-- bench:ddpm --> markers in README.md.
"""

import argparse
import platform
import time
from pathlib import Path

import torch

from course_lib import pipelines
from course_lib.data import load_mnist
from course_lib.metrics import (class_histogram, classifier_features, frechet_distance, load_classifier,
                                real_vs_real_floor)

from course_tools.bench import ROOT, write_results

# (sampler, steps, use_clipped_model_output); the last row measures DDIM without that switch.
CONFIGS = [("ddpm", 1000, True), ("ddim", 100, True), ("ddim", 50, True), ("ddim", 20, True), ("ddim", 10, True),
           ("ddim", 50, False)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--coverage-samples", type=int, default=1000,
                        help="DDIM-50 samples counted for the class shares (>= --num-samples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.coverage_samples < args.num_samples:
        parser.error(f"--coverage-samples ({args.coverage_samples}) must be at least --num-samples ({args.num_samples})")

    torch.manual_seed(args.seed)
    pipe = pipelines.load("ddpm", device="cpu")
    classifier = load_classifier()
    train, heldout = load_mnist("train"), load_mnist("test")
    heldout_features = classifier_features(classifier, heldout.images)
    floor = real_vs_real_floor(classifier, train.images, heldout_features, args.num_samples, seed=args.seed)

    rows = []
    for sampler, steps, clipped in CONFIGS:
        n = args.coverage_samples if (sampler, steps, clipped) == ("ddim", 50, True) else args.num_samples
        start = time.perf_counter()
        extra = {} if clipped else {"use_clipped_model_output": False}
        # One seed per batch (seed + i), so that any batch can be drawn again alone: not a job for validate.batched.
        images = torch.cat([pipe(batch_size=min(args.batch_size, n - i), num_inference_steps=steps,
                                 sampler=sampler, seed=args.seed + i, **extra)
                            for i in range(0, n, args.batch_size)])
        seconds = time.perf_counter() - start
        fid = frechet_distance(classifier_features(classifier, images[:args.num_samples]), heldout_features)
        hist = class_histogram(classifier, images)
        rows.append({"sampler": sampler if clipped else f"{sampler} (raw noise)", "steps": steps,
                     "classifier_fid": round(fid, 3), "class_share_samples": n,
                     "fid_over_floor": round(fid / floor, 3), "class_min": round(float(hist.min()), 4),
                     "class_max": round(float(hist.max()), 4), "class_shares": [round(float(h), 4) for h in hist],
                     "seconds_per_image": round(seconds / n, 4)})
        print(rows[-1])

    pool_shares = torch.bincount(train.labels, minlength=10).double() / len(train)
    result = {"num_samples": args.num_samples, "heldout": len(heldout), "data": heldout.source,
              "training_pool_class_shares": [round(float(s), 4) for s in pool_shares],
              "real_vs_real_floor": round(floor, 3), "rows": rows, "checkpoint": pipe.info,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads"}
    print(write_results("ddpm", result, markdown_table(result), args.out))


def markdown_table(result) -> str:
    info = result["checkpoint"]
    lines = [f"Classifier-FID to {result['heldout']:,} held-out digits, {result['num_samples']} samples each; "
             f"real-vs-real floor **{result['real_vs_real_floor']:.2f}**. Sampling on {result['machine']}.", "",
             "| sampler | steps | classifier-FID | × floor | smallest / largest class share (samples) | s / image |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = r["sampler"].replace("ddpm", "DDPM").replace("ddim", "DDIM")
        lines.append(f"| {name} | {r['steps']} | {r['classifier_fid']:.2f} | {r['fid_over_floor']:.2f} | "
                     f"{100 * r['class_min']:.1f}% / {100 * r['class_max']:.1f}% ({r['class_share_samples']:,}) | "
                     f"{r['seconds_per_image']:.3f} |")
    pool = result["training_pool_class_shares"]
    lines += ["", "DDIM uses `use_clipped_model_output=True` (the noise recomputed from the clipped x0 guess); "
              "the last row is DDIM without it, for comparison. Class shares from 200 samples are only indicative "
              "(one class's share has a standard error of about 2 points); the training pool itself has "
              f"{100 * min(pool):.1f}% to {100 * max(pool):.1f}% per class.",
              "", f"Checkpoint: {info.get('steps', '?')} training steps, {info.get('train_seconds', '?')} s on "
              f"{info.get('hardware', '?')}; trained by `{info.get('script', '?')}`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
