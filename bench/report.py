"""Where benchmark results go: bench/results/<name>.json and .md, and the README between markers."""

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
