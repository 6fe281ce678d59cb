"""The shipped DDPM, steps against quality for every sampler, by the course's protocol: python bench/ddpm_bench.py

For DDPM (ancestral), DDIM and DPM-Solver++(2M) at 1000 / 50 / 20 / 10 steps (the combinations in CONFIGS), ``course_lib.metrics.quality_report``: 1,000 generated digits per seed against 1,000 held-out digits,
the real-vs-real floor at the same size against the same reference, seeds 0 and 1 reported as a range,
precision/recall (Kynkäänniemi et al. 2019) and class shares, all in the shipped classifier's feature space.
Real digits are measured the same way (``course_lib.metrics.real_digits``, seeds 0-5): the first row of the table,
and the spread that 1,000 digits give by chance, with every disjoint draw of 1,000 that the training pool holds. Then the sampling time per digit, on one batch of --timing-batch digits with nothing else running: the rows take turns,
one pass each per round, and each keeps its fastest of three passes.

Every (row, seed) is stored in bench/results/ddpm.json as soon as it is measured, with the checkpoint's
SHA-256: an interrupted run resumes where it stopped, and a row is measured again only if the checkpoint
changed (or with --force). DDPM-1000 alone takes over an hour on two CPU cores. Also writes ddpm.md and
refreshes the table between the <!-- bench:ddpm --> markers in README.md.

More seeds for some rows go to a folder of their own, so that the table's rows keep one set of seeds, e.g.
python bench/ddpm_bench.py --seeds 2 3 --rows ddim-50,ddpm-1000 --no-timing --out bench/results/ddpm_more_seeds
writes only that folder's ddpm.json (no ddpm.md, no README table); run again with more seeds, it adds them.
"""

import argparse
import functools

import torch

from course_lib import pipelines
from course_lib.data import load_mnist
from course_lib.device import describe_device
from course_lib.metrics import load_classifier, quality_report, real_digits, real_draw_distances
from course_lib.pretrained import CHECKPOINTS

from course_tools.bench import (RESULTS, add_output_arguments, draw_gaps, drawn_and_timed, measure_seeds, on_seeds,
                                quality_cells, sampling, save_partial, span, stored_rows, time_rows, timing_note,
                                training_summary, write_results)

# (sampler, steps, variant): variant None is the sampler as it ships; the DDIM variants are for comparison:
# without use_clipped_model_output ("raw noise"), and with DDPM's noise (eta=1) in one half of the timesteps only,
# deterministic in the other, which show in which half DDIM falls behind DDPM.
# DPM-Solver++(2M) at 100 steps solves the same ODE as DDIM more finely: how close any deterministic sampler gets.
# DDPM-1000, the slowest by far, comes last so that the others are measured first.
VARIANTS = {"raw noise": dict(use_clipped_model_output=False),
            "DDPM noise below t=500": dict(eta=1.0, eta_interval=(0.0, 0.5)),
            "DDPM noise above t=500": dict(eta=1.0, eta_interval=(0.5, 1.0))}
CONFIGS = [("ddim", 50, None), ("ddim", 20, None), ("ddim", 10, None),
           ("dpmsolver", 100, None), ("dpmsolver", 50, None), ("dpmsolver", 20, None), ("dpmsolver", 10, None),
           ("ddim", 50, "raw noise"), ("ddim", 50, "DDPM noise below t=500"),
           ("ddim", 50, "DDPM noise above t=500"), ("ddpm", 50, None), ("ddpm", 1000, None)]
SEEDS = (0, 1)
# Real handwriting measured like a model (course_lib.metrics.real_digits), on more seeds than the rows: what each
# figure reads for a perfect model, and how far 1,000 digits move it by sampling alone.
REAL_SEEDS = tuple(range(6))
NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmsolver": "DPM-Solver++(2M)"}


def row_name(sampler: str, variant: str | None) -> str:
    return sampler if variant is None else f"{sampler} ({variant})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--timing-batch", type=int, default=100)
    parser.add_argument("--only", default=None, help="measure only rows of this sampler, e.g. ddim")
    parser.add_argument("--max-steps", type=int, default=1000, help="measure only rows with at most this many steps")
    parser.add_argument("--rows", default=None, help="measure only these rows as shipped, e.g. ddim-50,ddpm-1000")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help=f"the seeds to measure (default {' '.join(map(str, SEEDS))}; others need their own --out)")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip the timing passes (while the machine is busy; run again later to time)")
    parser.add_argument("--timing-only", action="store_true",
                        help="measure no new seeds, only time the rows that have no timing yet")
    parser.add_argument("--retime", action="store_true",
                        help="time every row again (do it alone on the machine, so that all rows are timed alike)")
    add_output_arguments(parser)
    args = parser.parse_args()
    plain = {f"{sampler}-{steps}" for sampler, steps, variant in CONFIGS if variant is None}
    chosen = None if args.rows is None else set(args.rows.split(","))
    if chosen is not None and not chosen <= plain:
        parser.error(f"--rows: no row {', '.join(sorted(chosen - plain))}; choose from {', '.join(sorted(plain))}")
    args.seeds = sorted(set(args.seeds))
    other_seeds = args.seeds != sorted(SEEDS)        # kept out of the table and the README's copy of it
    if other_seeds and args.out.resolve() == RESULTS.resolve():
        parser.error(f"--seeds {' '.join(map(str, args.seeds))}: other seeds than the table's go to a folder of their "
                     "own; add e.g. --out bench/results/ddpm_more_seeds")
    pipe, classifier = pipelines.load("ddpm", device=args.device), load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images
    identity = {"checkpoint_sha256": CHECKPOINTS["ddpm"][1], "num_samples": args.num_samples}
    done = {} if args.force else stored_rows("ddpm", identity, lambda r: (r["sampler"], r["steps"]), args.out)
    # the file's seeds: every seed its rows hold (a folder of other seeds grows run by run)
    seeds = sorted({*args.seeds, *(s for r in done.values() for s in r.get("seeds", []))})
    result = {**identity, "seeds": seeds, "timing_batch": args.timing_batch, "checkpoint": pipe.info,
              "machine": describe_device(args.device), "rows": []}

    def save():
        save_partial("ddpm", {**result, "rows": [r for r in done.values() if "seeds" in r]}, args.out)

    timing = []          # (row, draw): timed after every row is measured, all in turns (course_tools.bench.time_rows)
    for sampler, steps, variant in CONFIGS:
        name = row_name(sampler, variant)
        row = done.setdefault((name, steps), {"sampler": name, "steps": steps})
        if (args.only in (None, sampler) and steps <= args.max_steps
                and (chosen is None or (variant is None and f"{sampler}-{steps}" in chosen))):
            extra = VARIANTS.get(variant, {})
            generate = sampling(pipe, args.batch_size, num_inference_steps=steps, sampler=sampler, **extra)
            measure_seeds(row, () if args.timing_only else args.seeds,
                          lambda seed: {**quality_report(classifier, generate, heldout, pool, args.num_samples,
                                                         seeds=(seed,)), "sampled_on": describe_device(args.device)}, save)
            if args.retime:                          # (this block already keeps to --only and --max-steps)
                row.pop("seconds_per_digit", None)
                row.pop("seconds_per_digit_passes", None)
            if "seconds_per_digit" not in row and not args.no_timing and "seeds" in row:
                timing.append((row, functools.partial(pipe, batch_size=args.timing_batch, num_inference_steps=steps,
                                                      sampler=sampler, seed=0, progress=False, **extra)))
            if "ratio" in row:
                print(name, steps, "FD/floor", span(row["ratio"]), flush=True)
        if "seeds" in row:
            result["rows"].append(row)
    time_rows(timing, args.timing_batch, after_round=save)
    missing = [label(done[key]) for key in ((row_name(sampler, variant), steps) for sampler, steps, variant in CONFIGS)
               if "seeds" not in done[key]]
    if other_seeds:
        print(f"seeds {' '.join(map(str, args.seeds))} stored in {args.out / 'ddpm.json'}; the table keeps seeds "
              f"{' '.join(map(str, SEEDS))}")
        return
    if missing:           # a table without them would drop rows from ddpm.md and the README
        print(f"not measured yet: {', '.join(missing)}; run again (without --only, --max-steps or --rows) for the table")
        return
    pool_shares = torch.bincount(load_mnist("train").labels, minlength=10).double() / len(pool)
    result["training_pool_class_shares"] = [round(float(s), 4) for s in pool_shares]
    result["real_digits"] = quality_report(classifier, real_digits(heldout, pool, args.num_samples), heldout, pool,
                                           args.num_samples, REAL_SEEDS)      # the table's first row
    # per seed: the Fréchet distance of every disjoint draw of real digits, the floor's first
    result["real_draws_fd"] = real_draw_distances(classifier, heldout, pool, args.num_samples, REAL_SEEDS)
    print(write_results("ddpm", result, markdown_table(result), args.out))


def sampling_noise(real: dict) -> str:
    """What real digits read over all their seeds: the spread that 1,000 digits give by chance."""
    return (f"over seeds {real['seeds'][0]}-{real['seeds'][-1]} they read {span(real['ratio'])} × the floor, precision "
            f"{span(real['precision'])}, recall {span(real['recall'])}, smallest class share "
            f"{span(real['min_class_share'], '{:.1%}')} and largest {span(real['max_class_share'], '{:.1%}')}: "
            "a perfect model's figures would move this much from seed to seed")


def draw_note(result: dict) -> str:
    """The spread between disjoint draws of real digits against one reference, in words."""
    fds, gaps = result["real_draws_fd"], draw_gaps(result["real_draws_fd"])
    return (f"Against one seed's reference, {len(fds[0])} disjoint draws of {result['num_samples']:,} real digits "
            f"(the floor's and {len(fds[0]) - 1} more) have Fréchet distances within a factor {gaps['q90']:.2f} of each "
            f"other in 9 pairs of 10, and up to {gaps['largest']:.2f} (seed {result['real_digits']['seeds'][gaps['seed']]}): "
            "two rows of one seed that differ by less than that may differ by the draw alone.")


def display_name(row: dict) -> str:
    """ "DDIM (raw noise)" for the row of sampler "ddim (raw noise)"."""
    sampler, _, variant = row["sampler"].partition(" ")
    return NAMES[sampler] + (f" {variant}" if variant else "")


def label(row: dict) -> str:
    return f"{display_name(row)} at {row['steps']} steps"


def markdown_table(result) -> str:
    info, rows = result["checkpoint"], result["rows"]
    floor = [f for r in rows for f in r["floor"]]
    lines = [f"Shipped DDPM; {result['num_samples']:,} samples per seed, seeds {result['seeds']}, each against "
             f"{result['num_samples']:,} held-out digits, ranges over the seeds. Floor: as many training-pool digits "
             f"against the same reference ({span(floor, '{:.1f}')}). {drawn_and_timed(rows, result['machine'], label)}", "",
             "| sampler | steps | Fréchet distance / floor | precision | recall | smallest / largest class share "
             "| s / digit |", "|---|---|---|---|---|---|---|"]
    real = result["real_digits"]
    lines.append(f"| real digits (training pool) | – | {quality_cells(on_seeds(real, result['seeds']))} | – |")
    for r in rows:
        name = display_name(r)
        seconds = f"{r['seconds_per_digit']:.3f}" if "seconds_per_digit" in r else "–"
        partial = "" if len(r["seeds"]) == len(result["seeds"]) else f" (seed {r['seeds'][0]} only)"
        lines.append(f"| {name} | {r['steps']} | {span(r['ratio'])}{partial} | {span(r['precision'])} | "
                     f"{span(r['recall'])} | {span(r['min_class_share'], '{:.1%}')} / "
                     f"{span(r['max_class_share'], '{:.1%}')} | {seconds} |")
    pool = result["training_pool_class_shares"]
    lines += ["", f"Real digits: {result['num_samples']:,} training-pool digits per seed that the floor did not draw, "
              f"measured like a sampler's ({sampling_noise(real)}). {draw_note(result)}",
              "", "DDIM uses `use_clipped_model_output=True` (the noise recomputed from the clipped x0 guess); "
              "the raw-noise row is DDIM without it. The rows with DDPM noise below or above t=500 are DDIM with `eta=1` "
              "(the fresh noise DDPM adds over the same jumps) in that half of the timesteps and deterministic in the "
              "other (`eta_interval=(0, 0.5)` or `(0.5, 1)`). The training pool itself has "
              f"{100 * min(pool):.1f}% to {100 * max(pool):.1f}% of each class. Seconds per digit: "
              f"{timing_note(result['timing_batch'])}.",
              "", f"Checkpoint: {training_summary(info)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
