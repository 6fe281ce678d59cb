"""Friendly errors in the notebooks: a cell run out of order says so.

A learner who jumps to section 5 before running section 3 gets ``NameError: name 'mean' is
not defined`` and no idea why. ``friendly.install()``, which every notebook calls with its
imports, adds one sentence to that error: which name is missing, that an earlier cell defines it, and how to run the cells
above. Nothing else about error handling changes.
"""

from __future__ import annotations

import re
import sys

HINT = ("💡 `{name}` comes from an earlier cell of this notebook that has not run in this kernel yet "
        "(cells were run out of order, or the kernel restarted). Run the cells above this one "
        "(Run > Run All Above), or the whole notebook from the top (Kernel > Restart Kernel and Run All Cells).")


def out_of_order_hint(error: BaseException) -> str | None:
    """The sentence for a NameError from a skipped cell, or None for any other error."""
    match = re.search(r"name '(\w+)' is not defined", str(error)) if isinstance(error, NameError) else None
    return HINT.format(name=match.group(1)) if match else None


def install(shell=None) -> bool:
    """Show ``out_of_order_hint`` under NameErrors in this IPython kernel; returns whether one was found."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False

    def handler(shell, etype, value, tb, tb_offset=None):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        hint = out_of_order_hint(value)
        if hint:
            print(hint, file=sys.stderr)
        return None

    shell.set_custom_exc((NameError,), handler)
    return True
