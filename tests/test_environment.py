"""The two install routes list the same pinned packages, and the course reads them correctly."""

import re
import tomllib
from pathlib import Path

from course_lib import environment

ROOT = Path(__file__).resolve().parent.parent


def pyproject_pins():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(d.lower().split("==") for d in deps)


def environment_yml_pins():
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s*-\s*([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_every_dependency_is_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in d for d in deps), "pin every package: notebooks break when libraries move on"
    for needed in ["torch", "torchvision", "jupyterlab", "matplotlib", "ipywidgets", "nbval", "tqdm", "numpy"]:
        assert needed in pyproject_pins()


def test_pip_and_conda_routes_agree():
    assert environment_yml_pins() == pyproject_pins()


def test_installed_metadata_matches_pyproject():
    # the set-up check in notebook 00 reads the installed metadata; it must be this pyproject
    assert environment.pinned_requirements() == pyproject_pins()
    rows = environment.check_environment()
    assert {r[0] for r in rows} == set(pyproject_pins())
    assert all(ok for *_, ok in rows), [r for r in rows if not r[3]]


def test_kernels_import_this_checkout():
    # notebooks run in kernels started from notebooks/, so they import the *installed* course_lib;
    # a cached environment left pointing at another clone would silently test the wrong code
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-I", "-c", "import course_lib; print(course_lib.__file__)"],
                         cwd=ROOT / "notebooks", capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out).resolve() == (ROOT / "course_lib" / "__init__.py").resolve()
