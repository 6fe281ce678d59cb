"""Benchmark results: bench/<name>_bench.py writes them, notebooks and the README read them.

    write_results("ldm", result, table)   # bench/results/ldm.json and .md, and the README between markers
    results("ldm")                        # the stored dict, wherever a notebook runs from
    generate = sampling(pipe, 250, num_inference_steps=20, sampler="ddim")   # for metrics.quality_report
    span([2.41, 2.53])                    # "2.41-2.53": a figure over seeds, reported as its range
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_results(name: str, result: dict, table: str, out: Path = ROOT / "bench" / "results") -> str:
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


def results(name: str) -> dict:
    """The stored results of ``bench/<name>_bench.py`` (bench/results/<name>.json), wherever the caller runs from."""
    path = ROOT / "bench" / "results" / f"{name}.json"
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


# --- resumable benches: every (row, seed) is stored as soon as it is measured ----------------------------

def stored_rows(name: str, identity: dict, key, out: Path = ROOT / "bench" / "results") -> dict:
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


def save_partial(name: str, result: dict, out: Path = ROOT / "bench" / "results") -> None:
    """Write <name>.json only (no table, no README): what a resumable bench has measured so far."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
