"""course_tools.grade: a folder of handouts in, a table of student x exercise out, whatever the submissions do."""

import csv

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from course_tools import grade

SETUP = "from course_lib import checks\nimport torch"
CHECK = "\n\nchecks.check_reparameterize(reparameterize)"
ANSWERS = {
    "alice": "def reparameterize(mean, logvar, eps):\n    return mean + torch.exp(0.5 * logvar) * eps",
    "bob": "def reparameterize(mean, logvar, eps):\n    return mean + logvar * eps",
    "carol": "def reparameterize(mean, logvar, eps)\n    return mean",                       # syntax error
    "dave": "def reparameterize(mean, logvar, eps):\n    while True:\n        pass",          # never returns
}


def notebook(answer: str, stored=None):
    nb = new_notebook(cells=[new_markdown_cell("# 98 · tiny"), new_code_cell(SETUP), new_code_cell(answer + CHECK)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if stored:
        nb.cells[2].outputs = [new_output("execute_result", data={"text/plain": stored}, execution_count=1)]
    return nb


def test_grading_a_folder_gives_one_honest_row_per_student(tmp_path):
    course, folder = tmp_path / "course", tmp_path / "submissions"
    course.mkdir()
    nbformat.write(notebook(ANSWERS["alice"], "✅ Correct! reparameterisation: z = mean + std * eps"),
                   course / "98_tiny.ipynb")
    for student, answer in ANSWERS.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(notebook(answer), folder / student / "98_tiny.ipynb")
    (folder / "erin").mkdir()
    (folder / "erin" / "98_tiny.ipynb").write_text("{ not a notebook")
    out = tmp_path / "grades.csv"
    assert grade.main([str(folder), "--timeout", "8", "--out", str(out), "--course", str(course)]) == 0
    with open(out) as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert len(rows) == 5 and rows["alice"]["passed"] == "True" and rows["alice"]["exercise"] == "reparameterisation"
    assert rows["bob"]["passed"] == "False" and "log-variance" in rows["bob"]["message"]    # the check's own words
    assert rows["carol"]["passed"] == "False" and "SyntaxError" in rows["carol"]["message"]
    assert rows["dave"]["passed"] == "False" and "more than 8 s" in rows["dave"]["message"]
    assert rows["erin"]["passed"] == "False" and "could not be run" in rows["erin"]["message"]
    # the grader never overwrites a table
    try:
        grade.main([str(folder), "--out", str(out), "--course", str(course)])
    except SystemExit as stop:
        assert stop.code == 2
