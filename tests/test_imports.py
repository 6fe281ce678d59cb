"""course_lib reads as a stack of floors: every import, at any depth of any function, points down.

The floors are the diagram in course_lib/__init__.py's docstring; this test reads that diagram,
walks every module's imports with ``ast`` and fails on an import that points sideways or up (so
there can be no cycle), on a module missing from the diagram, and on ``course_lib`` importing the
tooling package.
"""

import ast
import re
from pathlib import Path

import course_lib

PACKAGE = Path(course_lib.__file__).parent


def floors() -> dict[str, int]:
    """module -> floor number, read from the diagram lines "  N  module module ..." of the package docstring."""
    result = {}
    for line in course_lib.__doc__.splitlines():
        match = re.match(r"^    (\d| )  ([a-z_]+(?:  [a-z_]+)*)   +\S", line)
        if match:
            floor = 6 if match.group(1) == " " else int(match.group(1))   # "beside the stack" sits at the top
            for name in match.group(2).split():
                result[name] = floor
    return result


def imports_of(path: Path) -> set[str]:
    """The course_lib modules ``path`` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:                            # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:                                          # from . import x
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] == "course_lib":
                parts = node.module.split(".")
                found.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
            elif node.module and node.module.split(".")[0] == "course_tools":
                found.add("course_tools")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "course_lib" and len(parts) > 1:
                    found.add(parts[1])
                elif parts[0] == "course_tools":
                    found.add("course_tools")
    return found


def test_the_diagram_names_every_module_once():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert set(floors()) == modules, (set(floors()) ^ modules)


def test_every_import_points_down():
    floor = floors()
    upward = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.stem == "__init__":
            assert imports_of(path) == set(), "importing course_lib must have no side effects"
            continue
        for target in sorted(imports_of(path)):
            assert target != "course_tools", f"{path.name} imports the tooling package"
            if floor[target] >= floor[path.stem]:
                upward.append(f"{path.stem} (floor {floor[path.stem]}) imports {target} (floor {floor[target]})")
    assert upward == []


def test_the_walk_catches_an_import_hidden_in_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from .pipelines import load\n    import course_lib.recipes\n    return load\n")
    assert imports_of(module) == {"pipelines", "recipes"}
