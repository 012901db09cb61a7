"""Helpers for the notebooks themselves: printed verdicts and source display.

``verdict(claim, holds, detail)`` prints ``holds: <claim> (<detail>)`` or ``DOES NOT HOLD: ...``.
The claim text is fixed; the detail carries measured numbers. The notebook tests (nbval) compare
the printed line with every number masked, so a verdict that flips from "holds" to "DOES NOT HOLD"
fails the tests, while numbers that differ between machines do not.

``show_source(obj)`` displays the source of a ``lecturelib`` function or class, so the page shows
exactly the code the tests check.
"""

from __future__ import annotations

import inspect


def verdict(claim: str, holds: bool, detail: str = "") -> bool:
    """Print one verdict line and return ``holds`` (so a notebook can also ``assert`` it)."""
    head = "holds" if holds else "DOES NOT HOLD"
    print(f"{head}: {claim}" + (f" ({detail})" if detail else ""))
    return bool(holds)


def show_source(*objects) -> None:
    """Display the source code of functions / classes / modules, syntax-highlighted."""
    from IPython.display import Code, display

    for obj in objects:
        display(Code(inspect.getsource(obj), language="python"))
