"""course_lib.build: student handouts run and say "Not yet"; nothing a person edited is overwritten."""

import nbformat
import pytest

from course_lib import build
from course_lib.build import BuildError, stub_solutions


def test_stub_keeps_indentation_and_code_around_it():
    source = ("def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\n"
              "def g():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION\n\ncheck(f)")
    stubbed = stub_solutions(source)
    assert "return x + y" not in stubbed and "return 2" not in stubbed
    assert stubbed.count("    # YOUR CODE HERE\n    raise NotImplementedError()") == 2
    assert stubbed.startswith("def f(x):\n    y = 1\n") and stubbed.endswith("\ncheck(f)")
    compile(stubbed, "<student>", "exec")  # still valid Python


def test_unbalanced_markers_are_refused():
    with pytest.raises(BuildError, match="unbalanced"):
        stub_solutions("def f():\n    ### BEGIN SOLUTION\n    return 1\n")


def test_every_chapter_has_exercises_and_no_answers_leak(tmp_path):
    chapters = build.course_notebooks()
    assert [p.name[:2] for p in chapters][:2] == ["00", "01"]
    build.make_student(tmp_path)
    for path in chapters:
        original = nbformat.read(path, as_version=4)
        student = nbformat.read(tmp_path / path.name, as_version=4)
        assert len(student.cells) == len(original.cells)
        for cell in student.cells:
            assert "### BEGIN SOLUTION" not in cell.source
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
    nb01 = nbformat.read(tmp_path / "01_gaussian_noise.ipynb", as_version=4)
    assert sum("raise NotImplementedError()" in c.source for c in nb01.cells) >= 2


def test_student_notebook_runs_and_reports_not_yet(tmp_path):
    build.make_student(tmp_path)
    path = tmp_path / "01_gaussian_noise.ipynb"
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("DEMO_TRAIN_STEPS = 600", "DEMO_TRAIN_STEPS = 20")  # keep the test quick
    assert "DEMO_TRAIN_STEPS = 20" in params.source
    nbformat.write(nb, path)

    executed = build.execute_notebook(path, cwd=build.NOTEBOOKS)  # raises if any cell errors
    texts = ["".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in c.outputs)
             for c in executed.cells if c.cell_type == "code"]
    stubs = sum("raise NotImplementedError()" in c.source for c in executed.cells)
    not_yet = [t for t in texts if "Not yet" in t]
    assert len(not_yet) == stubs >= 2
    assert all("NotImplementedError" in t and "Hint:" in t for t in not_yet)
    assert not any("Correct!" in t for t in texts)


def test_build_never_overwrites_edited_files(tmp_path):
    build._write_generated(tmp_path, {"a.ipynb": "v1"}, force=False)
    build._write_generated(tmp_path, {"a.ipynb": "v2"}, force=False)  # untouched since: fine
    assert (tmp_path / "a.ipynb").read_text() == "v2"
    (tmp_path / "a.ipynb").write_text("my own notes")
    with pytest.raises(BuildError, match="a.ipynb.*changed since the last build"):
        build._write_generated(tmp_path, {"a.ipynb": "v3"}, force=False)
    assert (tmp_path / "a.ipynb").read_text() == "my own notes"
    (tmp_path / "b.ipynb").write_text("a file the builder never wrote")
    with pytest.raises(BuildError, match="b.ipynb"):
        build._write_generated(tmp_path, {"b.ipynb": "v1"}, force=False)
    build._write_generated(tmp_path, {"a.ipynb": "v3"}, force=True)
    assert (tmp_path / "a.ipynb").read_text() == "v3"
