"""Grade a folder of submitted handouts: python -m course_tools.grade SUBMISSIONS [--timeout 120] [--out grades.csv]

SUBMISSIONS holds one folder per student, each with the notebooks they hand in, named as the chapters are
(``alice/02_ddpm.ipynb``); a notebook directly in SUBMISSIONS counts as a student named after the file.
Each notebook runs top to bottom in a fresh Jupyter kernel, a separate process started in an empty
temporary folder, never in this one: a submission's code cannot touch the grader. A cell that runs past
``--timeout`` seconds is interrupted and the notebook goes on, so an infinite loop costs one timeout; a cell
with an error (a syntax error included) is recorded and the notebook goes on.

The table has one row per student, notebook and exercise: whether the check passed and the message it
showed. An exercise whose check never printed (its cell failed or timed out) is a fail, with the reason.
The exercises expected are those of the course's own notebook of the same name, in order.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .build import NOTEBOOKS

CHECK_CALL = re.compile(r"\bchecks\.check_\w+\(")
RESULT = re.compile(r"^(✅ Correct!|❌ Not yet:) (.+?): (.*)$", re.S)


@dataclass
class Grade:
    student: str
    notebook: str
    exercise: str
    passed: bool
    message: str


def check_cells(nb) -> list:
    """The code cells that call an exercise check, in order."""
    return [cell for cell in nb.cells if cell.cell_type == "code" and CHECK_CALL.search(cell.source)]


def shown_result(cell) -> tuple[str, bool, str] | None:
    """(exercise, passed, message) as the cell's check printed it, or None if it printed none."""
    for output in cell.get("outputs", []):
        text = output.get("data", {}).get("text/plain", "") if "data" in output else ""
        match = RESULT.match("".join(text).strip())
        if match:
            message = match.group(3).split("\n   Hint:")[0].strip()
            return match.group(2), match.group(1).startswith("✅"), message
    return None


def failure(cell, timeout: int) -> str:
    """Why a check cell printed no result."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if not errors:
        return "the cell did not run"
    if errors[0].get("ename") == "KeyboardInterrupt":
        return f"the cell ran for more than {timeout} s and was stopped (an endless loop?)"
    return f"the cell raised {errors[0].get('ename')}: {errors[0].get('evalue')}"


def run_submission(path: Path, timeout: int):
    """Execute a submitted notebook in a fresh kernel, in an empty temporary folder; returns it with outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="grade-") as workdir:
        # nbclient's own kernel (it stops it when done); on a timeout it interrupts the cell and goes on
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                interrupt_on_timeout=True, resources={"metadata": {"path": workdir}})
        client.execute()
    return nb


def grade_notebook(student: str, path: Path, reference, timeout: int) -> list[Grade]:
    """One row per exercise of ``reference`` (the course's executed notebook) for ``student``'s ``path``."""
    expected = [shown_result(cell) for cell in check_cells(reference)]
    try:
        submitted = check_cells(run_submission(path, timeout))
    except Exception as err:  # noqa: BLE001 -- an unreadable file or a dead kernel is a row, not a crash
        submitted, reason = [], f"the notebook could not be run ({type(err).__name__}: {err})"
    else:
        reason = "the exercise's cell is missing from the submission"
    grades = []
    for i, want in enumerate(expected):
        exercise = want[0] if want else f"exercise {i + 1}"
        got = shown_result(submitted[i]) if i < len(submitted) else None
        if got:
            grades.append(Grade(student, path.name, got[0], got[1], got[2]))
        else:
            grades.append(Grade(student, path.name, exercise, False,
                                failure(submitted[i], timeout) if i < len(submitted) else reason))
    return grades


def submissions(folder: Path):
    """(student, notebook path) for every submitted notebook, in a stable order."""
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        student = path.stem if path.parent == folder else path.relative_to(folder).parts[0]
        yield student, path


def grade_folder(folder: Path, timeout: int = 120, course: Path = NOTEBOOKS) -> list[Grade]:
    grades = []
    for student, path in submissions(folder):
        name = path.name if path.parent != folder else _chapter_of(path.name, course)
        reference_path = course / name if name else None
        if reference_path is None or not reference_path.is_file():
            grades.append(Grade(student, path.name, "-", False, f"no course notebook is called {path.name}"))
            continue
        grades += grade_notebook(student, path, nbformat.read(reference_path, as_version=4), timeout)
    return grades


def _chapter_of(filename: str, course: Path) -> str | None:
    """For a flat submission (alice_02_ddpm.ipynb or 02_ddpm.ipynb): the chapter whose name it ends with."""
    return next((p.name for p in sorted(course.glob("[0-9][0-9]_*.ipynb")) if filename.endswith(p.name)), None)


def write_table(grades: list[Grade], out: Path) -> str:
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "notebook", "exercise", "passed", "message"])
        for g in grades:
            writer.writerow([g.student, g.notebook, g.exercise, g.passed, g.message])
    lines = ["| student | notebook | exercise | passed | message |", "|---|---|---|---|---|"]
    lines += [f"| {g.student} | {g.notebook} | {g.exercise} | {'yes' if g.passed else 'no'} | "
              f"{g.message.replace('|', '/')} |" for g in grades]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("submissions", type=Path, help="a folder with one folder of notebooks per student")
    parser.add_argument("--timeout", type=int, default=120, help="seconds any one cell may run (default 120)")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the table as CSV (default grades.csv)")
    parser.add_argument("--course", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    if args.out.exists():
        parser.error(f"{args.out} exists; pass another --out or delete it first (it is not overwritten)")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    grades = grade_folder(args.submissions, args.timeout, args.course)
    print(write_table(grades, args.out))
    print(f"\n{sum(g.passed for g in grades)} of {len(grades)} exercises passed; the table is in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
