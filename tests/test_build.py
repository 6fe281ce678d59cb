"""course_tools.build: student handouts run and say "Not yet"; nothing a person edited is overwritten."""

import re
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from course_tools import build
from course_tools.build import BuildError, stub_solutions


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


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    build.make_student(out)
    return out


def _quick(path):
    """Shorten the demo training runs, the only slow part a student notebook adds (keeps the test quick)."""
    nb = nbformat.read(path, as_version=4)
    params = next((c for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    if params is not None:
        params.source = re.sub(r"DEMO_TRAIN_STEPS = \d+", "DEMO_TRAIN_STEPS = 20", params.source)
        params.source = re.sub(r"TOY_TRAIN_STEPS = \d+", "TOY_TRAIN_STEPS = 200", params.source)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def student_runs(student_dir):
    """Every student handout run top to bottom, two at a time with one thread each: on two cores that takes less
    wall time than one after the other, since much of a notebook's time is single-threaded (start-up, plotting).
    A handout that fails gives its ``BuildError``, naming the cell."""
    def run(path):
        _quick(path)
        try:
            return build.execute_notebook(path, cwd=build.NOTEBOOKS, threads=1)
        except BuildError as err:
            return err

    paths = [student_dir / p.name for p in build.course_notebooks()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((p.name for p in paths), pool.map(run, paths)))


@pytest.mark.parametrize("chapter", [p.name for p in build.course_notebooks()])
def test_student_notebook_runs_and_every_check_says_not_yet(student_runs, chapter):
    executed = student_runs[chapter]
    if isinstance(executed, BuildError):
        raise executed
    texts = ["".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in c.outputs)
             for c in executed.cells if c.cell_type == "code"]
    stubs = sum("raise NotImplementedError()" in c.source for c in executed.cells)
    not_yet = [t for t in texts if "Not yet" in t]
    assert len(not_yet) == stubs
    assert all("NotImplementedError" in t and "Hint:" in t for t in not_yet)
    assert not any("Correct!" in t for t in texts)


@pytest.mark.parametrize("chapter", [p.name for p in build.course_notebooks()])
def test_instructor_notebook_passes_every_check(chapter):
    """The stored outputs (which nbval re-checks on every run) show Correct! for every exercise, never Not yet."""
    nb = nbformat.read(build.NOTEBOOKS / chapter, as_version=4)
    exercises = [c for c in nb.cells if "### BEGIN SOLUTION" in c.source]
    for cell in exercises:
        shown = "".join(o.get("data", {}).get("text/plain", "") + o.get("data", {}).get("text/html", "")
                        for o in cell.outputs)
        assert "Correct!" in shown and "Not yet" not in shown, cell.source[:80]
        assert "nbval-check-output" in cell.metadata.get("tags", [])  # so nbval compares it on every run
        assert "NBVAL" not in cell.source                          # and the student sees no test marker


def test_student_readme_lists_the_exercises_without_answers(student_dir):
    readme = (student_dir / "README.md").read_text()
    for path in build.course_notebooks():
        assert path.name in readme
    assert "cross_attention" in readme and "img2img_timesteps" in readme
    for path in build.course_notebooks():
        for cell in nbformat.read(path, as_version=4).cells:
            for block in build.SOLUTION.finditer(cell.source):
                body = block.group(0).splitlines()[1:-1]
                assert not any(line.strip() and line.strip() in readme for line in body)


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


def _fake_executed_notebook():
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    figure = new_output("display_data", data={"image/png": "UE5HZmlndXJl", "text/plain": "<Figure>"})
    slider = new_output("display_data", data={build.WIDGET: {"model_id": "m1"}, "text/plain": "interactive(children=(...))"})
    progress = new_output("display_data", data={build.WIDGET: {"model_id": "m2"}, "text/plain": "demo: 100%|██| 20/20"})
    nb = new_notebook(cells=[new_markdown_cell("# 09 · A chapter\n\ntext"),
                             new_code_cell("fig = plot()", outputs=[figure]),
                             new_code_cell("widgets.interact(...)", outputs=[slider]),
                             new_code_cell("train(...)", outputs=[progress])])
    nb.cells[1].metadata["tags"] = ["thumbnail"]
    return nb


def test_course_pages_show_widgets_as_their_static_companion_figure():
    page = build.static_widgets(_fake_executed_notebook())
    slider_out, progress_out = page.cells[2].outputs[0], page.cells[3].outputs[0]
    assert "UE5HZmlndXJl" in slider_out["data"]["text/html"] and "run this notebook" in slider_out["data"]["text/html"]
    assert progress_out["text"].startswith("demo: 100%")
    # the stored chapters too: no widget is left without a kernel, every slider shows a figure
    for path in build.course_notebooks():
        nb = build.static_widgets(nbformat.read(path, as_version=4))
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not any(build.WIDGET in o.get("data", {}) for o in outputs)
        notes = [o["data"]["text/html"] for o in outputs if "Interactive widget" in o.get("data", {}).get("text/html", "")]
        assert notes and all("<img" in n for n in notes), path.name


def test_course_map_and_links_between_chapters():
    nb = _fake_executed_notebook()
    assert build._thumbnail(nb) == "UE5HZmlndXJl"
    rows = [dict(page=f"0{i}.html", notebook=f"0{i}.ipynb", title=f"0{i} · chapter", summary=f"what {i} teaches",
                 thumbnail="UE5HZmlndXJl" if i else None, seconds=3.0) for i in range(3)]
    index = build._index_page(rows)
    assert index.count('class="card"') == 3 and index.count("<img") == 2 and "what 2 teaches" in index
    page = build._with_navigation("<html><body><p>x</p></body></html>", rows[0], rows[2])
    assert page.count('href="00.html"') == 2 and page.count('href="02.html"') == 2 and "course map" in page
    for path in build.course_notebooks():                     # every chapter brings its two-line summary
        assert len(nbformat.read(path, as_version=4).metadata["course"]["summary"]) > 40


def test_the_readme_course_map_shows_each_chapters_stored_figure(tmp_path):
    """docs/course_map/NN.png is what `python -m course_tools.build map` writes from the notebooks as stored: re-run
    it after re-executing a notebook, or the README shows an old figure."""
    written = build.write_course_map(tmp_path)
    assert written
    for fresh in written:
        shipped = build.ROOT / "docs" / "course_map" / fresh.name
        assert shipped.read_bytes() == fresh.read_bytes(), f"{shipped} is stale: python -m course_tools.build map"


def test_a_notebook_run_with_one_thread_gets_one_torch_thread(tmp_path):
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("import torch\ntorch.get_num_threads()")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "threads.ipynb")
    executed = build.execute_notebook(tmp_path / "threads.ipynb", threads=1)
    assert executed.cells[0].outputs[0]["data"]["text/plain"] == "1"


def test_a_failing_notebook_stops_the_build_naming_notebook_and_cell(tmp_path):
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("# 99 · broken"), new_code_cell("from course_lib import friendly\nfriendly.install()\nx = 1"),
                             new_code_cell("y = undefined_name + x")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(BuildError, match=r"99_broken.ipynb failed at cell 2: NameError"):
        build.execute_notebook(path)
    # in a real kernel, the out-of-order hint reaches the learner with the error
    from nbclient import NotebookClient

    client = NotebookClient(nbformat.read(path, as_version=4), kernel_name="python3", allow_errors=True)
    executed = client.execute()
    shown = "".join(o.get("text", "") + "".join(o.get("traceback", [])) for o in executed.cells[2].outputs)
    assert "NameError" in shown and "`undefined_name` comes from an earlier cell" in shown


def test_formulas_become_mathml_and_code_keeps_its_dollars():
    text = build.mathml("Noise $x_t = \\sqrt{\\bar\\alpha_t}\\,x_0$ and\n$$\\beta_t \\in (0, 1)$$\nbut `$HOME` stays.")
    assert text.count("<math") == 2 and 'display="block"' in text and "`$HOME`" in text
    assert "$" not in text.replace("`$HOME`", "")
    with pytest.raises(BuildError, match="cannot typeset"):
        build.mathml("broken $\\frac{1}{$ formula")


def test_course_pages_reference_nothing_remote():
    """Every stored chapter, as the site writes it: no script, stylesheet or font from another host."""
    from nbconvert import HTMLExporter

    plain, _ = HTMLExporter(template_name="lab").from_notebook_node(_fake_executed_notebook())
    assert build.remote_references(plain), "the check must catch nbconvert's default CDN scripts"
    for path in build.course_notebooks():
        page = build.notebook_html(nbformat.read(path, as_version=4))
        assert build.remote_references(page) == [], path.name
        assert "mathjax" not in page.lower(), path.name
        has_tex = any("$" in build._CODE.sub("", c.source) for c in nbformat.read(path, as_version=4).cells
                      if c.cell_type == "markdown")
        assert ("<math" in page) == has_tex, path.name


def test_make_course_prints_one_line_per_notebook_and_no_kernel_warning(tmp_path, capfd, monkeypatch):
    import jupyter_client.manager
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    started = []

    class RecordingKernelManager(jupyter_client.manager.KernelManager):
        def start_kernel(self, **kwargs):
            started.append(self)
            return super().start_kernel(**kwargs)

    monkeypatch.setattr(jupyter_client.manager, "KernelManager", RecordingKernelManager)

    nb = new_notebook(cells=[new_markdown_cell("# 98 · tiny\n\nNoise $x_t$ at step $t$."), new_code_cell("print(6 * 7)")],
                     metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "98_tiny.ipynb"
    nbformat.write(nb, path)
    index = build.make_course(tmp_path / "site", chapters=[path])
    out, err = capfd.readouterr()
    assert re.fullmatch(r"\[1/1\] 98_tiny\.ipynb +ran in +\d+ s\n", out), out
    assert "WARNING" not in err and "without encryption" not in err, err
    page = (tmp_path / "site" / "98_tiny.html").read_text()
    assert index.name == "index.html" and "<math" in page and build.remote_references(page) == []
    # every kernel is stopped when its notebook is done (a leftover one warns when the build exits)
    assert len(started) == 1 and not started[0].is_alive()


@pytest.mark.parametrize("path", sorted(build.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.name)
def test_every_formula_on_the_site_is_typeset(path):
    """The site's pages show MathML, never raw TeX: an inline $...$ broken across a line, for one, is left as text."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [cell for cell in nb.cells if cell.cell_type == "markdown"]
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<math.*?</math>", " ", build.notebook_html(nb), flags=re.S))
    raw = [text[max(0, m.start() - 40):m.end() + 20] for m in re.finditer(r"\\[a-zA-Z]+|\$[^$\n]{1,60}\$", text)]
    assert not raw, f"raw TeX on the page of {path.name}: {raw[:3]}"
