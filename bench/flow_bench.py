"""Flow matching against diffusion on the same U-Net, step for step: python bench/flow_bench.py

The shipped DDPM (sampled with DDIM and DPM-Solver++(2M)) and the shipped flow-matching model (sampled
with Euler and Heun) share the U-Net, the data and the training budget (same steps, batch size, learning
rate and EMA; the recipes in course_lib/recipes.py). For 1, 2, 4, 8, 16 and 50 steps each:
``course_lib.metrics.quality_report`` (1,000 digits per seed against 1,000 held-out digits, the floor at the
same size, seeds 0 and 1 as a range, precision/recall, class shares), the number of network calls, and
the sampling time per digit (one batch of --timing-batch digits with nothing else running, the rows taking turns;
each row's fastest of three passes).

Resumable like bench/ddpm_bench.py: every (row, seed) is stored in bench/results/flow.json as soon as it
is measured, with its checkpoint's SHA-256 (--models ddpm measures the diffusion rows alone). Writes flow.md and the README table between
<!-- bench:flow --> markers.
"""

import argparse
import functools
import json
import time
from pathlib import Path

import torch

from course_lib import pipelines
from course_lib.data import load_mnist
from course_lib.device import describe_device
from course_lib.flow import DiffusionAsFlow, FlowMatchingPipeline
from course_lib.metrics import load_classifier, quality_report
from course_lib.pretrained import CHECKPOINTS
from course_lib.schedule import NoiseSchedule
from course_lib.step_search import search_sigmas

from course_tools.bench import (FLOW_NAMES as NAMES, add_output_arguments, drawn_and_timed,
                                measure_seeds, quality_cells, sampling, save_partial, span, stored_rows, time_rows,
                                timing_note, training_summary, write_results)

STEPS = (1, 2, 4, 8, 16, 50)
# the searched clocks (course_lib.step_search): Euler levels chosen to follow each model's own ODE, found from
# fresh noise (its own seed, not a measuring seed) and the model alone, for step counts up to max_steps
SEARCH = {"num_noise": 128, "num_grid": 100, "max_steps": 16, "seed": 424242}
# (row, model, sampler): "ddpm on flow clock" is the DDPM's network driven as a flow (flow.DiffusionAsFlow):
# DDIM's own step, taken at the flow's evenly spaced noise levels instead of DDIM's evenly spaced t.
# "euler shift 3": the flow's clock bent towards high noise (SD3's time shift), where MNIST wants more steps.
# "reflow euler": the flow model after one round of reflow (recipe "reflow"): more training than the others.
# "... searched": the same step on the levels SEARCH found for that network (rows up to SEARCH["max_steps"]).
METHODS = [("ddim", "ddpm", "ddim", {}), ("dpmsolver", "ddpm", "dpmsolver", {}),
           ("ddpm on flow clock", "ddpm", "euler", {}), ("ddpm searched", "ddpm", "euler", {}),
           ("euler", "flow", "euler", {}), ("heun", "flow", "heun", {}),
           ("euler shift 3", "flow", "euler", {"shift": 3.0}), ("euler searched", "flow", "euler", {}),
           ("reflow euler", "reflow", "euler", {})]
SEARCHED = {"ddpm searched": "ddpm on flow clock", "euler searched": "flow"}     # row -> the pipeline searched
SEEDS = (0, 1)


def measured(name: str, steps: int) -> bool:
    """Whether the bench has a row for this method at this step count (searched levels only up to max_steps)."""
    return name not in SEARCHED or steps <= SEARCH["max_steps"]


def searched_levels(pipe, sha: str | None, stored: dict, device: str) -> dict:
    """The searched levels of one pipeline: the stored ones while its checkpoint and SEARCH are unchanged,
    else searched now (a few minutes on two cores). Returns {"sigmas": {"n": [...]}, "seconds", ...}."""
    if stored.get("checkpoint_sha256") == sha and stored.get("settings") == SEARCH:
        return stored
    noise = torch.randn((SEARCH["num_noise"], *pipe.sample_shape), generator=torch.Generator().manual_seed(SEARCH["seed"]))
    start = time.perf_counter()
    sigmas = search_sigmas(pipe, noise, max_steps=SEARCH["max_steps"], num_grid=SEARCH["num_grid"])
    return {"sigmas": {str(n): levels for n, levels in sigmas.items()}, "checkpoint_sha256": sha, "settings": SEARCH,
            "seconds": round(time.perf_counter() - start), "machine": describe_device(device)}


def network_calls(sampler: str, steps: int) -> int:
    """U-Net evaluations per digit: one per step, except Heun's 2 n - 1."""
    return 2 * steps - 1 if sampler == "heun" else steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--timing-batch", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=max(STEPS), help="measure only rows with at most this many steps")
    parser.add_argument("--no-timing", action="store_true", help="skip the timing passes (while the machine is busy)")
    parser.add_argument("--models", default="ddpm,flow,reflow", help="measure rows of these models only (comma-separated)")
    parser.add_argument("--retime", action="store_true",
                        help="time every row again (do it alone on the machine, so that all rows are timed alike)")
    add_output_arguments(parser)
    args = parser.parse_args()
    models = args.models.split(",")
    pipes = {name: pipelines.load(name, device=args.device) for name in models}
    if "ddpm" in pipes:
        pipes["ddpm on flow clock"] = FlowMatchingPipeline(DiffusionAsFlow(pipes["ddpm"].unet, NoiseSchedule("linear"),
                                                                       prediction_type=pipes["ddpm"].prediction_type))
    classifier = load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images
    identity = {"num_samples": args.num_samples}
    # a row is kept only while its model's checkpoint is the one it measured
    stored = {} if args.force else stored_rows("flow", identity, lambda r: (r["sampler"], r["steps"]), args.out)
    done = {key: row for key, row in stored.items() if row["checkpoint_sha256"] == sha256_of(row["model"])}
    if args.retime:
        for key, row in done.items():
            if row["model"] in models:
                row.pop("seconds_per_digit", None)
                row.pop("seconds_per_digit_passes", None)
    previous = results_or_empty(args.out)
    searched = previous.get("searched_levels", {})
    model_of = {name: model for name, model, _, _ in METHODS}
    for row_name, key in SEARCHED.items():
        if key in pipes:
            searched[key] = searched_levels(pipes[key], sha256_of(model_of[row_name]), searched.get(key, {}), args.device)
    for key, row in list(done.items()):             # a searched row is kept only while its levels are current
        if key[0] in SEARCHED and row.get("sigmas") != searched.get(SEARCHED[key[0]], {}).get("sigmas", {}).get(str(key[1])):
            del done[key]
    result = {**identity, "seeds": list(SEEDS), "timing_batch": args.timing_batch,
              "checkpoints": {**previous.get("checkpoints", {}), **{name: pipes[name].info for name in models}},
              "searched_levels": searched, "machine": describe_device(args.device), "rows": []}

    def save():
        save_partial("flow", {**result, "rows": [r for r in done.values() if "seeds" in r]}, args.out)

    timing = []          # (row, draw): timed after every row is measured, all in turns (course_tools.bench.time_rows)
    for steps in STEPS:                      # the cheap rows first
        for name, model, sampler, extra in METHODS:
            if not measured(name, steps):
                continue
            row = done.setdefault((name, steps), {"model": model, "sampler": name, "steps": steps,
                                                     "network_calls": network_calls(sampler, steps),
                                                     "checkpoint_sha256": sha256_of(model)})
            if steps > args.max_steps or model not in pipes:
                continue
            if name in SEARCHED:
                extra = {"sigmas": searched[SEARCHED[name]]["sigmas"][str(steps)]}
                row["sigmas"] = extra["sigmas"]
            source = SEARCHED.get(name, name)          # the pipeline these rows draw from
            pipe = pipes[source if source in pipes else model]
            generate = sampling(pipe, args.batch_size, num_inference_steps=steps, sampler=sampler, **extra)
            measure_seeds(row, SEEDS, lambda seed: {**quality_report(classifier, generate, heldout, pool, args.num_samples,
                                                                     seeds=(seed,)), "sampled_on": describe_device(args.device)}, save)
            if "seconds_per_digit" not in row and not args.no_timing and "seeds" in row:
                timing.append((row, functools.partial(pipe, batch_size=args.timing_batch, num_inference_steps=steps,
                                                      sampler=sampler, seed=0, progress=False, **extra)))
            print(NAMES[name], steps, "FD/floor", span(row["ratio"]), flush=True)
    time_rows(timing, args.timing_batch, after_round=save)
    wanted = [(name, steps) for steps in STEPS for name, _, _, _ in METHODS if measured(name, steps)]
    if any(key not in done or "seeds" not in done[key] for key in wanted):
        print("some rows are not measured yet; run again (with every model) for the table")
        return
    result["rows"] = [done[key] for key in wanted]
    print(write_results("flow", result, markdown_table(result), args.out))


def sha256_of(model: str) -> str | None:
    """The pinned SHA-256 of a shipped model (None before it is shipped)."""
    return CHECKPOINTS[model][1] if model in CHECKPOINTS else None


def results_or_empty(out: Path) -> dict:
    path = out / "flow.json"
    return json.loads(path.read_text()) if path.exists() else {}


def markdown_table(result) -> str:
    rows = result["rows"]
    floor = [f for r in rows for f in r["floor"]]
    train = {name: training_summary(info) for name, info in result["checkpoints"].items()}
    lines = [f"The shipped DDPM and flow-matching model: the same U-Net, data and training recipe (steps, batch size, "
             "learning rate, EMA; the wall-clock times below are not comparable). "
             f"{result['num_samples']:,} samples per seed, seeds {result['seeds']}, each against "
             f"{result['num_samples']:,} held-out digits, ranges over the seeds; floor (as many training-pool digits "
             f"against the same reference) {span(floor, '{:.1f}')}. {drawn_and_timed(rows, result['machine'])} Seconds per "
             f"digit: {timing_note(result['timing_batch'])}.", "",
             "| method | steps | network calls | Fréchet distance / floor | precision | recall "
             "| smallest / largest class share | s / digit |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        seconds = f"{r['seconds_per_digit']:.4f}" if "seconds_per_digit" in r else "–"
        lines.append(f"| {NAMES[r['sampler']]} | {r['steps']} | {r['network_calls']} | {quality_cells(r)} | {seconds} |")
    reflow = result["checkpoints"]["reflow"]
    lines += ["", f"Training: DDPM, {train['ddpm']}. Flow, {train['flow']}. The reflow rows are extra work on top of the "
              f"flow model: {reflow['pairs']} (the pairs), then {train['reflow']} (fine-tuning on them). Heun's last step is an Euler step "
              "(it ends on the clean image), so n Heun steps cost 2n - 1 network calls; one Heun step is one Euler step. "
              "DPM-Solver++(2M) at 1 and 2 steps is DDIM (its first and last steps are first order)."]
    search = result["searched_levels"]
    settings = search["flow"]["settings"]
    lines += ["", f"Searched levels (`course_lib.step_search`, rows up to {settings['max_steps']} steps): for each network, "
              f"the Euler levels that a dynamic-programming search finds to keep its path closest to its own Heun solve on "
              f"{settings['num_grid']} even steps (the best on that grid for 1 and 2 steps, an approximation from 3), from "
              f"{settings['num_noise']} fresh noises (seed {settings['seed']}, none of the measured samples' noise), "
              f"chosen among those {settings['num_grid'] + 1} levels; no digit and no classifier is involved. Searching took "
              f"{search['flow']['seconds']:,} s for the flow model and {search['ddpm on flow clock']['seconds']:,} s for the "
              f"DDPM on {search['flow']['machine']}, every step count at once. The levels, 8 steps: flow "
              + " ".join(f"{x:.2f}" for x in search["flow"]["sigmas"]["8"]) + "; DDPM "
              + " ".join(f"{x:.2f}" for x in search["ddpm on flow clock"]["sigmas"]["8"]) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
