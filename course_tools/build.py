"""Build the course's artefacts: the executed HTML course and the student handouts.

    python -m course_tools.build course    # run every notebook, write build/course/*.html
    python -m course_tools.build student   # write build/student/*.ipynb with solutions stubbed
    python -m course_tools.build map       # the README's course map thumbnails, docs/course_map/NN.png

(``make course`` and ``make student`` call these.) Solutions in the notebooks
are marked the way nbgrader marks them::

    def q_sample(x0, t, noise, alphas_cumprod):
        ### BEGIN SOLUTION
        ...the answer...
        ### END SOLUTION

and the student version keeps the line's indentation and puts
``# YOUR CODE HERE`` / ``raise NotImplementedError()`` in their place, so the
notebook still runs and its check says "Not yet".

Nothing a person edited is overwritten silently: each build folder keeps a
manifest of the checksums it wrote, and a file changed since is left alone
unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import html
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"

SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)",
                      re.MULTILINE | re.DOTALL)
MANIFEST = ".manifest.json"


class BuildError(RuntimeError):
    """A notebook failed to run, or a build would overwrite someone's edits."""


def course_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The chapters in order: notebooks/NN_name.ipynb."""
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


# --- student handouts -------------------------------------------------------------

def stub_solutions(source: str) -> str:
    """Replace every ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block by a stub."""
    def stub(match: re.Match) -> str:
        indent = match.group(1)
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError(){match.group(2)}"

    if source.count("### BEGIN SOLUTION") != source.count("### END SOLUTION"):
        raise BuildError("unbalanced ### BEGIN SOLUTION / ### END SOLUTION markers in:\n" + source[:200])
    return SOLUTION.sub(stub, source)


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions stubbed and every output cleared (outputs would give answers away)."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = stub_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    return nb


def make_student(out_dir: Path = BUILD / "student", force: bool = False) -> list[Path]:
    """Write the student version of every chapter, and a README without answers, to ``out_dir``.

    Returns the notebook paths written.
    """
    written, chapters, exercises = {}, [], []
    for path in course_notebooks():
        original = nbformat.read(path, as_version=4)
        written[path.name] = nbformat.writes(student_version(original))
        chapters.append((path.name, _title(original)))
        exercises += [(path.name, name) for name in _exercise_names(original)]
    paths = _write_generated(out_dir, {**written, "README.md": _student_readme(chapters, exercises)}, force)
    return [p for p in paths if p.suffix == ".ipynb"]


def _exercise_names(nb) -> list[str]:
    """The functions a learner writes: the ``def`` line before each solution block."""
    names = []
    for cell in nb.cells:
        for block in SOLUTION.finditer(cell.source):
            defs = re.findall(r"^def (\w+)\(", cell.source[:block.start()], re.MULTILINE)
            names.append(defs[-1] if defs else "?")
    return names


def _student_readme(chapters, exercises) -> str:
    listing = "\n".join(f"{i}. `{name}`: {title}" for i, (name, title) in enumerate(chapters, 1))
    rows = "\n".join(f"| {nb} | `{name}` |" for nb, name in exercises)
    return f"""# From Noise to Digits: student notebooks

Open the notebooks in order and run each from the top (Kernel > Restart & Run All).
They run as they are: every exercise cell says "Not yet" with a hint until you fill it in.

{listing}

Each **Your turn** cell has a function to complete. Replace

    # YOUR CODE HERE
    raise NotImplementedError()

with your code, run the cell, and the check under it says ✅ Correct! or ❌ Not yet with a hint. Each
further "Not yet" gives a more specific hint (the idea, then the formula), never code; `checks.hint("name")`
asks for the next hint, and `checks.solution("name")` shows code once you have tried (the name is the one the
check prints). Later cells use the library's version, so an unsolved exercise never stops a notebook.

| notebook | the function you write |
|---|---|
{rows}

These notebooks need the course's library and shipped checkpoints: keep them in the course
repository (for example in build/student/, as `make student` writes them) and start Jupyter from there.
"""


# --- the executed course ----------------------------------------------------------

def kernel_manager(sockets: str):
    """A manager for a fresh python3 kernel talking over Unix sockets (IPC) in the folder ``sockets``.

    IPC rather than TCP: nothing is exposed, so the kernel has nothing to warn about. The path must be
    absolute, since the kernel runs in the notebook's folder.
    """
    from jupyter_client.manager import KernelManager

    if os.name == "posix":
        return KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
    return KernelManager(kernel_name="python3")


def execute_notebook(path: Path, timeout: int = 900, cwd: Path | None = None,
                     threads: int | None = None) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in a fresh kernel and return it with outputs.

    A failing cell raises ``BuildError`` naming the notebook, the cell number and the error.
    threads: the kernel's OpenMP threads (PyTorch's intra-op threads), for running notebooks side by side;
    None leaves PyTorch's default (one per core).
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="course-kernel-") as sockets:
        km = kernel_manager(sockets)
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd or path.parent)}})
        try:
            # start_kernel's env is the kernel's whole environment
            client.execute(**({} if threads is None else {"env": {**os.environ, "OMP_NUM_THREADS": str(threads)}}))
        except CellExecutionError as err:
            raise BuildError(_failure(path, nb, err)) from err
        finally:   # a kernel manager we made is ours to stop: nbclient only stops kernels it made itself
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb


def _failure(path: Path, nb, err) -> str:
    """"<notebook> failed at cell <n>: <the error's last line>", without terminal colour codes."""
    cell_no = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
        o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
    first = text.splitlines()[-1] if text else type(err).__name__
    return f"{path.name} failed at cell {cell_no}: {first}"


def make_course(out_dir: Path = BUILD / "course", force: bool = False, chapters: list[Path] | None = None) -> Path:
    """Execute every chapter (or ``chapters``) and write an HTML page per chapter plus index.html. Returns the index.

    Prints one line per chapter with the seconds it took. Each page links to the previous and next
    chapter; widgets, which need a running kernel, are shown as their static companion figure;
    formulas are MathML written at build time, so the pages need no network (``remote_references``);
    the index is the course map, one thumbnail and a two-line summary per chapter.
    """
    executed, rows = [], []
    chapters = course_notebooks() if chapters is None else chapters
    for number, path in enumerate(chapters, 1):
        start = time.perf_counter()
        nb = execute_notebook(path)
        seconds = time.perf_counter() - start
        print(f"[{number}/{len(chapters)}] {path.name:<32} ran in {seconds:5.0f} s", flush=True)
        executed.append((path, nb))
        rows.append(dict(page=path.with_suffix(".html").name, notebook=path.name, title=_title(nb),
                         summary=nb.metadata.get("course", {}).get("summary", ""), thumbnail=_thumbnail(nb),
                         seconds=seconds))
    pages = {}
    for i, (path, nb) in enumerate(executed):
        pages[rows[i]["page"]] = _with_navigation(notebook_html(nb), rows[i - 1] if i else None,
                                                  rows[i + 1] if i + 1 < len(rows) else None)
    pages["index.html"] = _index_page(rows)
    for name, page in pages.items():
        if remote := remote_references(page):
            raise BuildError(f"{name} would load {remote[0]} from the network; the course must read offline")
    _write_generated(out_dir, pages, force)
    return out_dir / "index.html"


# nbconvert's lab page, less the scripts it fetches from CDNs (MathJax, require.js, mermaid, the widget
# manager): formulas are MathML by then, and widgets are replaced by their static figures.
OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}<style>math{font-size:1.1em} math[display=block]{margin:.6em 0}</style>{%- endblock extra_css -%}
"""


def notebook_html(nb) -> str:
    """One chapter as a self-contained HTML page: no kernel, no network (math as MathML, widgets as figures)."""
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file="course_offline.html.j2",
                            extra_loaders=[jinja2.DictLoader({"course_offline.html.j2": OFFLINE_TEMPLATE})])
    body, _ = exporter.from_notebook_node(mathml_notebook(static_widgets(nb)))
    return body


# $$display$$ or $inline$ math; code (fenced blocks and `spans`) is left alone, dollars and all.
_CODE = re.compile(r"(```[\s\S]*?```|`[^`]*`)")
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.DOTALL)


def mathml(markdown: str) -> str:
    """Markdown with every ``$...$`` / ``$$...$$`` formula replaced by MathML, which browsers typeset natively."""
    from latex2mathml.converter import convert

    def formula(match: re.Match) -> str:
        display, inline = match.groups()
        try:
            return convert((display or inline).strip(), display="block" if display else "inline")
        except Exception as err:  # noqa: BLE001 -- latex2mathml raises many types for TeX it cannot read
            raise BuildError(f"cannot typeset the formula {match.group(0)!r}: {err}") from err

    parts = _CODE.split(markdown)
    return "".join(part if i % 2 else _MATH.sub(formula, part) for i, part in enumerate(parts))


def mathml_notebook(nb) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose markdown cells and Markdown outputs carry MathML instead of TeX."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = mathml(cell.source)
        for out in cell.get("outputs", []):
            if "text/markdown" in out.get("data", {}):
                out["data"]["text/markdown"] = mathml(out["data"]["text/markdown"])
    return nb


_REMOTE = re.compile(r"""<script[^>]*\bsrc=["']?(https?:)?//[^"' >]+|<link[^>]*\bhref=["']?(https?:)?//[^"' >]+"""
                     r"""|@import\s+(url\()?["']?(https?:)?//[^"' )]+|url\(["']?(https?:)?//[^"' )]+"""
                     r"""|\bimport\s*(\(|[^;'"]*from\s*)["'](https?:)?//[^"']+""", re.IGNORECASE)


def remote_references(page: str) -> list[str]:
    """Every script, stylesheet, font or module a page would fetch from another host (links to read are fine)."""
    return [m.group(0) for m in _REMOTE.finditer(page)]


WIDGET = "application/vnd.jupyter.widget-view+json"
INTERACTIVE = ("interactive(", "VBox(", "HBox(", "Box(", "IntSlider(", "FloatSlider(", "Text(")


def static_widgets(nb) -> nbformat.NotebookNode:
    """A copy of an executed notebook for a page without a kernel.

    An interactive widget (a slider, a text box) becomes a note and its static companion: the last
    figure above it, which the notebooks place there on purpose. A progress bar keeps its text.
    """
    nb = copy.deepcopy(nb)
    companion = None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET not in data:
                outputs.append(out)
                if "image/png" in data:
                    companion = data["image/png"]
                continue
            text = data.get("text/plain", "")
            if text.startswith(INTERACTIVE):
                note = ("<p><em>Interactive widget: run this notebook in Jupyter to move it. "
                        + ("On this page, its static companion figure:</em></p>"
                           f'<img src="data:image/png;base64,{companion}" style="max-width:100%">'
                           if companion else "</em></p>"))
                outputs.append(nbformat.v4.new_output("display_data", data={"text/html": note}))
            else:
                outputs.append(nbformat.v4.new_output("stream", name="stderr", text=text + "\n"))
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


def _thumbnail(nb) -> str | None:
    """Base64 PNG for the course map: the cell tagged "thumbnail", else the notebook's first figure."""
    images = [(("thumbnail" in c.metadata.get("tags", [])), o["data"]["image/png"])
              for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    tagged = [img for is_tagged, img in images if is_tagged]
    return (tagged or [img for _, img in images] or [None])[0]


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def _with_navigation(body: str, previous: dict | None, following: dict | None) -> str:
    links = ['<a href="index.html">course map</a>']
    if previous:
        links.insert(0, f'<a href="{previous["page"]}">← {html.escape(previous["title"])}</a>')
    if following:
        links.append(f'<a href="{following["page"]}">{html.escape(following["title"])} →</a>')
    nav = ('<nav style="font-family:sans-serif;padding:8px 16px;background:#f3f3f3;display:flex;gap:2em">'
           + "".join(links) + "</nav>")
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav, body, count=1)
    return body.replace("</body>", nav + "</body>", 1)


def _index_page(rows) -> str:
    cards = []
    for r in rows:
        thumb = (f'<img src="data:image/png;base64,{r["thumbnail"]}" alt="" '
                 'style="width:220px;height:150px;object-fit:contain;background:#fff">' if r.get("thumbnail") else "")
        cards.append(f'<a class="card" href="{r["page"]}">{thumb}<h3>{html.escape(r["title"])}</h3>'
                     f'<p>{html.escape(r.get("summary", ""))}</p><small>{r["notebook"]}, ran in '
                     f'{r["seconds"]:.0f} s</small></a>')
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             ".map{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:16px}"
             ".card{display:block;border:1px solid #ddd;border-radius:8px;padding:10px;color:inherit;"
             "text-decoration:none}.card:hover{border-color:#888}.card h3{font-size:1em;margin:.5em 0}"
             ".card p{font-size:.9em;margin:0 0 .5em}")
    return ("<!doctype html><meta charset='utf-8'><title>From Noise to Digits</title>"
            f"<style>{style}</style><h1>From Noise to Digits</h1><p>A text-to-image latent diffusion model "
            "built from scratch on MNIST, one idea per chapter, small enough for a laptop CPU. "
            f"The course map:</p><div class='map'>{''.join(cards)}</div>")


def write_course_map(out_dir: Path = ROOT / "docs" / "course_map") -> list[Path]:
    """The README's course map: each chapter's thumbnail (from its stored outputs) as docs/course_map/NN.png."""
    import base64

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in course_notebooks():
        thumb = _thumbnail(nbformat.read(path, as_version=4))
        if thumb:
            target = out_dir / f"{path.name[:2]}.png"
            target.write_bytes(base64.b64decode(thumb))
            written.append(target)
    return written


# --- writing without clobbering ---------------------------------------------------

def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_generated(out_dir: Path, files: dict[str, str], force: bool) -> list[Path]:
    """Write ``files`` (name -> text) into ``out_dir``, refusing to clobber edited files.

    A file counts as edited when it exists and its checksum is not the one this
    builder recorded when it last wrote it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    edited = [name for name in files if (out_dir / name).exists()
              and _sha((out_dir / name).read_text()) != manifest.get(name)]
    if edited and not force:
        raise BuildError(f"not overwriting {', '.join(edited)} in {out_dir}: changed since the last build "
                         "(perhaps by you). Move them somewhere safe, or rebuild with --force (FORCE=1 with make).")
    written = []
    for name, text in files.items():
        (out_dir / name).write_text(text)
        manifest[name] = _sha(text)
        written.append(out_dir / name)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["course", "student", "map"])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default build/<what>)")
    parser.add_argument("--force", action="store_true", help="overwrite files edited since the last build")
    args = parser.parse_args(argv)
    try:
        if args.what == "map":
            paths = write_course_map(args.out or ROOT / "docs" / "course_map")
            print(f"Wrote {len(paths)} thumbnails to {paths[0].parent}")
        elif args.what == "course":
            index = make_course(args.out or BUILD / "course", args.force)
            print(f"The course is at {index}")
        else:
            paths = make_student(args.out or BUILD / "student", args.force)
            print(f"Wrote {len(paths)} student notebooks to {paths[0].parent if paths else args.out}")
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
