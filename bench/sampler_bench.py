"""DDIM against DPM-Solver++(2M) on the shipped DDPM, by the course's protocol: python bench/sampler_bench.py

For each sampler and number of steps, ``course_lib.metrics.quality_report``: 1,000 generated digits
against 1,000 held-out digits, the real-vs-real floor at the same size against the same reference,
seeds 0 and 1 reported as a range, precision/recall (Kynkäänniemi et al. 2019) and class shares,
all in the shipped classifier's feature space. Writes bench/results/samplers.json and .md.
(``bench/ddpm_bench.py`` is the older 200-sample table the README and notebook 02 still show.)
"""

import argparse
import platform
import time
from pathlib import Path

import torch

from course_lib import pipelines
from course_lib.data import load_mnist
from course_lib.metrics import load_classifier, quality_report

from course_tools.bench import ROOT, write_results

CONFIGS = [("ddim", 10), ("dpmsolver", 10), ("ddim", 20), ("dpmsolver", 20), ("ddim", 50), ("dpmsolver", 50)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    pipe, classifier = pipelines.load("ddpm", device="cpu"), load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images
    rows = []
    for sampler, steps in CONFIGS:
        def generate(seed, n):
            # one seed per batch (1000 * seed + i), so that any batch can be drawn again alone
            return torch.cat([pipe(batch_size=min(args.batch_size, n - i), num_inference_steps=steps,
                                   sampler=sampler, seed=1000 * seed + i, progress=False)
                              for i in range(0, n, args.batch_size)])
        start = time.perf_counter()
        report = quality_report(classifier, generate, heldout, pool, num_samples=args.num_samples, seeds=(0, 1))
        seconds = time.perf_counter() - start
        rows.append({"sampler": sampler, "steps": steps, **report, "seconds": round(seconds, 1)})
        print(sampler, steps, [round(r, 2) for r in report["ratio"]], flush=True)
    result = {"rows": rows, "checkpoint": pipe.info,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads"}
    print(write_results("samplers", result, markdown_table(result), args.out))


def span(values, fmt="{:.2f}") -> str:
    low, high = min(values), max(values)
    return fmt.format(low) if fmt.format(low) == fmt.format(high) else f"{fmt.format(low)}-{fmt.format(high)}"


def markdown_table(result) -> str:
    first = result["rows"][0]
    lines = [f"Shipped DDPM, {first['num_samples']:,} samples per seed, seeds {first['seeds']}, each against "
             f"{first['num_samples']:,} held-out digits; ranges over the seeds. Floor: as many training-pool digits "
             f"against the same reference ({span(first['floor'], '{:.1f}')}). Sampling on {result['machine']}.", "",
             "| sampler | steps | Fréchet distance / floor | precision | recall | smallest / largest class share |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = {"ddim": "DDIM", "dpmsolver": "DPM-Solver++(2M)"}[r["sampler"]]
        lines.append(f"| {name} | {r['steps']} | {span(r['ratio'])} | {span(r['precision'])} | {span(r['recall'])} | "
                     f"{span(r['min_class_share'], '{:.1%}')} / {span(r['max_class_share'], '{:.1%}')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
