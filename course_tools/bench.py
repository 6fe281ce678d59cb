"""Benchmark results: bench/<name>_bench.py writes them, notebooks and the README read them.

    write_results("ldm", result, table)   # bench/results/ldm.json and .md, and the README between markers
    results("ldm")                        # the stored dict, wherever a notebook runs from
    generate = sampling(pipe, 250, num_inference_steps=20, sampler="ddim")   # for metrics.quality_report
    span([2.41, 2.53])                    # "2.41-2.53": a figure over seeds, reported as its range
    time_rows([(row, lambda: pipe(batch_size=100))], 100)   # s / digit: the fastest of TIMING_PASSES passes
"""

import json
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"     # every bench's JSON and Markdown, unless --out says otherwise
# Timing passes per row: one pass of 100 digits wandered by up to 40% between runs on the 2-core machine (another
# process, the VM's neighbours); the machine's other work only ever slows a pass down, so the fastest is kept.
# Its speed also drifts over minutes (on 2026-11-27 the same network call took 2.3 ms per digit, then 3.1 ms half an
# hour later), so rows are timed in turns, one pass of each per round: a slow stretch then slows every row's pass
# of that round alike, instead of every pass of whichever row it fell on.
TIMING_PASSES = 3


def time_rows(jobs, batch_size: int, passes: int = TIMING_PASSES, after_round=None) -> None:
    """Time each ``(row, draw)`` of ``jobs``: ``draw()`` draws ``batch_size`` digits. Round by round, one pass of
    every row; each row stores its seconds per digit of every pass ("seconds_per_digit_passes") and the fastest
    ("seconds_per_digit", as Python's ``timeit`` advises), which its table shows under "s / digit".
    ``after_round()``, if given, runs after each round (to save what is done so far)."""
    for row, _ in jobs:
        row["seconds_per_digit_passes"] = []
    for _ in range(passes):
        for row, draw in jobs:
            start = time.perf_counter()
            draw()
            row["seconds_per_digit_passes"].append(round((time.perf_counter() - start) / batch_size, 4))
            row["seconds_per_digit"] = min(row["seconds_per_digit_passes"])
        if after_round:
            after_round()


def timing_note(batch_size: int) -> str:
    """How ``time_rows`` timed a table's rows, for the sentence under it."""
    return (f"one batch of {batch_size} with nothing else running, the rows taking turns; each row's fastest of "
            f"{TIMING_PASSES} passes")


def write_results(name: str, result: dict, table: str, out: Path = RESULTS) -> str:
    """Write <name>.json and <name>.md under ``out``; refresh README.md between <!-- bench:name --> markers.

    Returns the Markdown table.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{name}.md").write_text(table)
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + table + rest[rest.index(end):])
    return table


def add_output_arguments(parser, force: bool = True) -> None:
    """The arguments every sampling bench shares: --force (measure every row again), --device, --out."""
    if force:
        parser.add_argument("--force", action="store_true", help="measure every row again")
    parser.add_argument("--device", default="cpu",
                        help="where to draw the samples, e.g. cuda; each row records where it was drawn")
    parser.add_argument("--out", type=Path, default=RESULTS)


def sampled_on(rows, unlabelled: str = "the machine that timed them", label=None) -> str:
    """The machines the rows' samples were drawn on; ``unlabelled`` for rows measured before rows said (they were
    drawn where their bench ran). With ``label(row) -> str``, rows drawn away from the machine most rows used are
    named: "<machine>, except DDIM-50 on <other machine>"."""
    machine = lambda r: r.get("sampled_on", unlabelled)
    counts = Counter(machine(r) for r in rows)
    if label is None or len(counts) == 1:
        return ", ".join(sorted(counts))
    main = counts.most_common(1)[0][0]
    others = sorted(set(counts) - {main})
    return f"{main}, except " + "; ".join(
        ", ".join(label(r) for r in rows if machine(r) == other) + f" on {other}" for other in others)


def drawn_and_timed(rows, machine: str, label=None) -> str:
    """A table header's sentence on where the rows' samples were drawn and where they were timed (``machine``,
    the bench's timing pass); rows that do not say were drawn there too. ``label``: see ``sampled_on``."""
    drawn = sampled_on(rows, unlabelled=machine, label=label)
    return f"Samples drawn and timed on {machine}." if drawn == machine else f"Samples drawn on {drawn}; timed on {machine}."


def training_summary(info: dict) -> str:
    """How a checkpoint was trained, from its recorded info: "12,000 steps of 64, 7,702 s on <hardware>", and for a
    two-stage recipe (``course_lib.recipes.SECOND_STAGE``) each stage's steps, batch, learning rate, time and
    hardware (the stages may have run on different machines)."""
    def stage(s, lr=True):
        precision = f" in {s['precision']} autocast" if s.get("precision", "float32") != "float32" else ""
        return (f"{s['steps']:,} steps of {s['batch_size']:,}" + (f" at lr {s['lr']:g}" if lr else "")
                + f"{precision}, {s['train_seconds']:,} s on {s['hardware']}")
    if "stages" not in info:
        return stage(info, lr=False)
    first, second = info["stages"]
    return f"two stages: {stage(first)}; then, from its EMA weights, {stage(second)}"


# How bench/flow_bench.py's methods (the rows' "sampler") are named in its table and in notebook 07.
FLOW_NAMES = {"ddim": "diffusion, DDIM", "dpmsolver": "diffusion, DPM-Solver++(2M)",
              "ddpm on flow clock": "diffusion, DDIM step on the flow's clock",
              "ddpm searched": "diffusion, DDIM step on searched levels", "euler": "flow, Euler", "heun": "flow, Heun",
              "euler shift 3": "flow, Euler, clock shifted (shift 3)", "euler searched": "flow, Euler on searched levels",
              "reflow euler": "flow after one reflow, Euler"}


# What a default guidance setting must reach on every seed of bench/guidance_bench.py (issue 17's floors):
# the share of digits read as the asked one, the share on the asked thickness side, and variety (within-class
# spread over real digits').
GUIDANCE_FLOORS = {"accuracy": 0.995, "thickness_adherence": 0.95, "spread": 0.85}


def recommended_guidance(rows: list[dict], floors: dict = GUIDANCE_FLOORS) -> dict | None:
    """The guidance bench row a default should use: of the rows whose every seed reaches each floor, the one
    closest to real digits (lowest mean FD / floor). None if no row reaches the floors."""
    good = [r for r in rows if meets_floors(r, floors)]
    return min(good, key=lambda r: sum(r["ratio"]) / len(r["ratio"]), default=None)


def meets_floors(row: dict, floors: dict = GUIDANCE_FLOORS) -> bool:
    """Whether every seed of a guidance bench row reaches each floor. The shares were counted in float32, so 950 of
    1,000 is stored as 0.94999998: a share within 1e-6 below a floor reaches it."""
    return all(min(row[key]) >= low - 1e-6 for key, low in floors.items())


def guidance_settings(guidance_interval, condition_annealing=None, guidance_rescale: float = 0.0) -> dict:
    """The pipeline arguments besides the scale that a guidance bench row was measured with, as the row stores
    them (lists, not tuples, as JSON gives them back)."""
    return {"guidance_interval": [float(x) for x in guidance_interval],
            "condition_annealing": None if condition_annealing is None else [float(x) for x in condition_annealing],
            "guidance_rescale": float(guidance_rescale)}


def guidance_row(guidance: dict, guidance_scale: float, guidance_interval, condition_annealing=None,
                 guidance_rescale: float = 0.0) -> dict:
    """The row of the guidance bench's results measured at exactly these pipeline arguments."""
    wanted = guidance_settings(guidance_interval, condition_annealing, guidance_rescale)
    for row in guidance["rows"]:
        if row["guidance_scale"] == guidance_scale and row["settings"] == wanted:
            return row
    raise ValueError(f"the guidance bench has no row for guidance scale {guidance_scale:g} with {wanted}")


def results(name: str) -> dict:
    """The stored results of ``bench/<name>_bench.py`` (bench/results/<name>.json), wherever the caller runs from."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: restore it with `git checkout -- bench/results/{name}.json` "
                                f"or measure it again with `python bench/{name}_bench.py`")
    return json.loads(path.read_text())


def sampling(pipe, batch_size: int, **kwargs):
    """generate(seed, n) for ``metrics.quality_report``: n digits from ``pipe(**kwargs)`` in batches, batch i
    drawn with seed 1000 * seed + i so that any batch can be drawn again alone."""
    import torch

    def generate(seed: int, n: int):
        return torch.cat([pipe(batch_size=min(batch_size, n - i), seed=1000 * seed + i, progress=False, **kwargs)
                          for i in range(0, n, batch_size)])
    return generate


def span(values, fmt: str = "{:.2f}") -> str:
    """A figure measured over seeds as its range, e.g. "2.41-2.53" (one value if they print the same)."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


OVERLAP = "within the seeds' spread of"


def compare(a, b, below: str = "lower than", above: str = "higher than", overlap: str = OVERLAP) -> str:
    """Where figure ``a``, measured over seeds, stands against ``b``, judged by their ranges: ``below`` when all of
    a's values lie under all of b's, ``above`` when all lie over, ``overlap`` when the ranges overlap (the seeds
    cannot tell them apart). E.g. compare([1.2, 1.3], [1.4, 1.5], "better than", "worse than") -> "better than"."""
    if max(a) < min(b):
        return below
    if min(a) > max(b):
        return above
    return overlap


def on_seeds(report: dict, seeds) -> dict:
    """A ``metrics.quality_report`` cut down to the given seeds (each per-seed list keeps those seeds' values)."""
    keep = [i for i, s in enumerate(report["seeds"]) if s in seeds]
    return {key: [value[i] for i in keep] if isinstance(value, list) else value for key, value in report.items()}


def real_digit_figures(rows) -> dict:
    """The DDPM bench's results, for what real digits read under the protocol ("real_digits", one draw per seed,
    and "real_draws_fd", every disjoint draw's Fréchet distance): to be read beside another bench's ``rows``, which
    must have been measured against the same reference and floor; a row whose floor differs is refused."""
    ddpm = results("ddpm")
    floors = dict(zip(ddpm["real_digits"]["seeds"], ddpm["real_digits"]["floor"]))
    for row in rows:
        if any(abs(floor - floors[seed]) > 1e-3 * floors[seed] for seed, floor in zip(row["seeds"], row["floor"])):
            raise ValueError(f"a row's floor {row['floor']} is not the DDPM bench's for seeds {row['seeds']}: "
                             "measure both with the same held-out digits, pool, sample size and seeds")
    return ddpm


def draw_gaps(fds_by_seed) -> dict:
    """How far apart the Fréchet distances of disjoint draws of real digits lie when each is measured against the
    same reference: for every pair of draws of one seed, the larger distance over the smaller.

    fds_by_seed: one list per seed, the distance of each draw to that seed's reference (the floor's draw included).
    Returns {"q90": the factor 9 pairs in 10 stay within, "largest": the largest factor, "seed": the index of the
    seed it came from, "pairs": how many pairs, "factors": every pair's factor, ascending}. A gap between two rows
    of one seed that is smaller than these is within what drawing 1,000 digits does by chance."""
    import numpy as np

    factors, largest, where = [], 0.0, None
    for i, fds in enumerate(fds_by_seed):
        for a in range(len(fds)):
            for b in range(a + 1, len(fds)):
                factors.append(max(fds[a], fds[b]) / min(fds[a], fds[b]))
                if factors[-1] > largest:
                    largest, where = factors[-1], i
    return {"q90": float(np.quantile(factors, 0.9)), "largest": largest, "seed": where, "pairs": len(factors),
            "factors": sorted(factors)}


def share_apart(gaps: dict, factor: float) -> float:
    """The share of ``draw_gaps``' pairs of real-digit draws at least ``factor`` apart: how often drawing 1,000 real
    digits twice makes a gap this large by chance alone."""
    return sum(f >= factor for f in gaps["factors"]) / gaps["pairs"]


def quality_cells(row: dict) -> str:
    """A ``metrics.quality_report`` row as Markdown table cells, ranges over the seeds:
    "FD / floor | precision | recall | smallest / largest class share"."""
    return (f"{span(row['ratio'])} | {span(row['precision'])} | {span(row['recall'])} | "
            f"{span(row['min_class_share'], '{:.1%}')} / {span(row['max_class_share'], '{:.1%}')}")


def setting_table(result: dict, setting: str, intro: str, column: str, names: dict, sampler_names: dict) -> str:
    """The Markdown table of a ``compare_setting`` bench: ``intro`` (what was trained; the sample count, seeds,
    floor and machine are added), then one row per (value, sampler, steps), the value named by ``names``."""
    first = result["rows"][0]
    lines = [f"{intro}; {first['num_samples']:,} samples per seed, seeds {first['seeds']}, ranges over the seeds; floor "
             f"{span(first['floor'], '{:.1f}')}. On {result['machine']}.", "",
             f"| {column} | sampler | steps | Fréchet distance / floor | precision | recall | "
             "smallest / largest class share |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {names[r[setting]]} | {sampler_names[r['sampler']]} | {r['steps']} | "
                     f"{quality_cells(r)} |")
    return "\n".join(lines) + "\n"


# --- resumable benches: every (row, seed) is stored as soon as it is measured ----------------------------

def stored_rows(name: str, identity: dict, key, out: Path = RESULTS) -> dict:
    """The rows bench ``name`` stored earlier, by ``key(row)``, if its identity (checkpoint hash, protocol) is
    ``identity``; otherwise none, so that everything is measured again."""
    path = out / f"{name}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if any(stored.get(k) != v for k, v in identity.items()):
        return {}
    return {key(row): row for row in stored.get("rows", [])}


def measure_seeds(row: dict, seeds, measure, save) -> dict:
    """Fill ``row`` with ``measure(seed)`` (a dict of one-item lists, like ``metrics.quality_report``) for every
    seed it lacks, calling ``save()`` after each, so an interrupted run loses at most one seed of one row."""
    for seed in seeds:
        if seed in row.get("seeds", []):
            continue
        for k, value in measure(seed).items():
            row[k] = row.get(k, []) + value if isinstance(value, list) else value
        save()
    return row


def save_partial(name: str, result: dict, out: Path = RESULTS) -> None:
    """Write <name>.json only (no table, no README): what a resumable bench has measured so far."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))


# --- one setting, several values: the same recipe, seed and budget, trained once per value ------------------

def compare_setting_main(doc: str, name: str, recipe: str, setting: str, values, samplers, markdown_table,
                         run_prefix: str) -> None:
    """The command line of a bench built on ``compare_setting`` (bench/parameterisation_bench.py and
    bench/time_sampling_bench.py): parse --steps etc., measure, write the results and the README table."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="training steps per model")
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250, help="sampling batch")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = compare_setting(name, recipe, setting, values, samplers, steps=args.steps, ema_decay=args.ema_decay,
                             num_samples=args.num_samples, batch_size=args.batch_size, runs=args.runs,
                             run_prefix=run_prefix, out=args.out)
    print(write_results(name, result, markdown_table(result), args.out))


def compare_setting(name: str, recipe: str, setting: str, values, samplers, *, steps: int, ema_decay: float,
                    num_samples: int = 1000, batch_size: int = 250, seeds=(0, 1), runs: Path = ROOT / "runs",
                    run_prefix: str | None = None, out: Path = RESULTS) -> dict:
    """Train ``recipe`` once per value of ``setting`` (all else equal: seed, so batches, noise and timesteps,
    steps, EMA), then measure each with every (sampler, steps) of ``samplers`` by ``metrics.quality_report``.

    Resumable twice over: training from runs/<run_prefix>-<value>/, and every (value, sampler, seed) is stored
    in <name>.json as soon as it is measured. Returns the result dict (rows carry ``setting: value``,
    sampler, steps, the report's lists, train_seconds, final_loss_avg100).
    """
    from course_lib.data import load_mnist
    from course_lib.device import describe_device
    from course_lib.metrics import load_classifier, quality_report
    from course_lib.recipes import train_model

    classifier = load_classifier()
    heldout, pool = load_mnist("test").images, load_mnist("train").images
    identity = {"training_steps": steps, "ema_decay": ema_decay, "num_samples": num_samples}
    done = stored_rows(name, identity, lambda r: (r[setting], r["sampler"], r["steps"]), out)
    result = {**identity, "recipe": recipe, "setting": setting,
              "machine": describe_device(), "rows": []}

    def save():
        save_partial(name, {**result, "rows": [r for r in done.values() if "seeds" in r]}, out)

    for value in values:
        pipe, info = train_model(recipe, runs / f"{run_prefix or name}-{value}", device="cpu", steps=steps,
                                 ema_decay=ema_decay, second_stage=False, **{setting: value})
        result["batch_size"] = info["batch_size"]
        for sampler, sampler_steps in samplers:
            row = done.setdefault((value, sampler, sampler_steps),
                                  {setting: value, "sampler": sampler, "steps": sampler_steps})
            generate = sampling(pipe, batch_size, num_inference_steps=sampler_steps, sampler=sampler)
            measure_seeds(row, seeds, lambda seed: quality_report(classifier, generate, heldout, pool,
                                                                  num_samples, seeds=(seed,)), save)
            row.update(train_seconds=info["train_seconds"], final_loss_avg100=info["final_loss_avg100"])
            result["rows"].append(row)
            print(value, sampler, sampler_steps, span(row["ratio"]), flush=True)
    return result
