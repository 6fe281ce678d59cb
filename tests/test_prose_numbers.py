"""Numbers in the notebooks' prose cannot drift from what the notebooks and benches measure.

A markdown cell may state a decimal ("2.43"), a percentage ("12%") or a time ("40 s", "3 minutes") only if the
same value, at the precision written, is printed in that notebook's stored outputs, set in its code, or stored in
a bench/results file the notebook reads. Rerunning a notebook then updates its prose or makes this test fail. Formulas ($...$), code
(`...`) and citations ("(Ho et al., 2020)") are not prose numbers. ``CITED`` lists the few numbers quoted from
the literature, which no cell measures.
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
PROSE_NUMBER = re.compile(rf"(?<![\w.$-])(?:{_NUMBER}\s?%|\d[\d,]*\.\d+(?!\.?\d)(?![A-Za-wyz_])"
                          rf"|{_NUMBER}\s?(?:ms|s|seconds?|minutes?|min|hours?)\b)")
ANY_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e-?\d+)?")
# notebook -> numbers its prose quotes from published work (value, where it comes from)
CITED = {"03_vae.ipynb": {"0.18215": "Stable Diffusion's latent scaling factor (Rombach et al., 2022)"}}


def prose(markdown: str) -> str:
    """The markdown without formulas, code and citations."""
    for pattern in (r"\$\$.*?\$\$", r"\$[^$\n]*\$", r"`[^`]*`", r"\([^()]*\b(?:19|20)\d\d[a-z]?\b[^()]*\)"):
        markdown = re.sub(pattern, " ", markdown, flags=re.S)
    return markdown


def known_values(notebook: dict) -> set:
    """Every number printed in the notebook's outputs, written in its code, or stored by a bench it reads."""
    code = "".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    texts = [(ROOT / "bench" / "results" / f"{name}.json").read_text()
             for name in sorted(set(re.findall(r"bench_results\(\"(\w+)\"\)", code)))]
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        texts.append("".join(cell["source"]))
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            for kind in ("text/plain", "text/markdown", "text/html"):
                texts.append("".join(output.get("data", {}).get(kind, "")))
    return {float(m) for text in texts for m in ANY_NUMBER.findall(text.replace(",", ""))}


def unbacked_numbers(notebook: dict, cited=()) -> list:
    known = known_values(notebook)
    problems = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        text = prose("".join(cell["source"]))
        for match in PROSE_NUMBER.finditer(text):
            written = re.match(r"[\d,]*(?:\.\d+)?", match.group()).group().replace(",", "")
            if written in cited:
                continue
            decimals = len(written.split(".")[1]) if "." in written else 0
            value = float(written)
            if not any(round(k, decimals) == value or round(100 * k, decimals) == value for k in known):
                context = text[max(0, match.start() - 60):match.end() + 20].replace("\n", " ")
                problems.append(f"cell {index}: {match.group()!r} in '...{context}...'")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_number_in_the_prose_is_measured(path):
    problems = unbacked_numbers(json.loads(path.read_text()), CITED.get(path.name, {}))
    assert not problems, (f"{path.name} states numbers no output, code or bench result backs; print them from "
                          "code (IPython.display.Markdown) or read them from bench/results:\n" + "\n".join(problems))


def test_a_typed_number_is_caught():
    """The check itself: a planted hand-typed figure fails, the same figure printed by a cell passes."""
    notebook = {"cells": [{"cell_type": "markdown", "source": ["DDIM-50 is within 1.37x of the floor, in 12 s."]},
                          {"cell_type": "code", "source": ["x = 1"], "outputs": [{"text": ["ratio 2.00\n"]}]}]}
    assert len(unbacked_numbers(notebook)) == 2
    notebook["cells"][1]["outputs"] = [{"text": ["ratio 1.3712, took 11.8 s\n"]}]
    assert unbacked_numbers(notebook) == []
    notebook["cells"][0]["source"] = ["Ho et al. used $\\beta_1 = 0.0001$ `lr=3e-4` (Ho et al., 2020: 3.17 FID)."]
    assert unbacked_numbers(notebook) == []
