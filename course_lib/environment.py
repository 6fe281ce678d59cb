"""Is this the environment the course was tested with? (Notebook 00's set-up check.)

The pinned versions are read from course_lib's own installed metadata, which
comes from pyproject.toml, so there is one list of pins and no copy of it here.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
import re

import torch

from .device import get_device


def pinned_requirements() -> dict[str, str]:
    """{package: pinned version} as declared by the installed course-lib (pyproject.toml)."""
    try:
        requires = md.requires("course-lib") or []
    except md.PackageNotFoundError as err:
        raise RuntimeError("course_lib is not installed as a package: run `make lab` (or "
                           "`pip install -e .` in the repository) so its pinned versions are known.") from err
    pins = {}
    for line in requires:
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^;\s]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def check_environment() -> list[tuple[str, str, str, bool]]:
    """Rows of (package, pinned, installed, ok) for every pinned package."""
    rows = []
    for name, pinned in pinned_requirements().items():
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = "missing"
        rows.append((name, pinned, installed, installed.split("+")[0] == pinned))
    return rows


def report() -> bool:
    """Print the set-up check; True when every pinned package matches."""
    rows = check_environment()
    print(f"Python {platform.python_version()} on {platform.system()} {platform.machine()}; "
          f"PyTorch device: {get_device()} ({torch.get_num_threads()} CPU threads)")
    width = max(len(r[0]) for r in rows)
    for name, pinned, installed, ok in rows:
        print(f"  {'✓' if ok else '✗'} {name:<{width}}  pinned {pinned:<10} installed {installed}")
    all_ok = all(r[3] for r in rows)
    print("All pinned packages match." if all_ok else
          "Some versions differ from the tested ones: run `make lab` to use the course environment.")
    return all_ok
