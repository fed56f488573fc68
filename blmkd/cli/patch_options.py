"""Options for the window a model sees: ``--patch`` (a size or ``auto``) and ``--centre-weight``."""

from __future__ import annotations

from typing import Annotated

import typer

from blmkd.errors import BlmkdError


def parse_patch(value: str | int | None) -> int | str | None:
    """``--patch``: an odd positive integer, ``auto`` or None (unset); one-line error otherwise."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        p = int(text)
    except ValueError:
        raise BlmkdError(f"--patch must be an odd integer or 'auto', not {value!r}") from None
    if p < 1:
        raise BlmkdError(f"--patch must be >= 1, got {p}")
    return p


_AUTO = (
    " `auto` picks P on validation pixels: short runs at P = 1, 3, 5, 7, 9, 11 on the same split, the best "
    "validation OA, ties to the smaller P (table in OUT/patch_select.json; not with a disjoint split)."
)
PatchOrAuto = Annotated[
    str,
    typer.Option(
        "--patch", callback=parse_patch, help="Odd patch (window) size P; the model sees P×P pixels." + _AUTO
    ),
]
StudentPatch = Annotated[
    str | None,
    typer.Option(
        "--patch",
        callback=parse_patch,
        help="The student's window P (odd); default: the teacher's. A teacher that sees a larger window passes "
        "on what its context tells it; the split stays the teacher's."
        + _AUTO
        + " Candidates train on labels alone.",
    ),
]
CentreWeight = Annotated[
    float,
    typer.Option(
        "--centre-weight",
        help="Pool (1 − w)·mean of the window's tokens + w·its centre token, w in [0, 1]: more weight on the "
        "pixel being classified, for thin structures (roads, rivers). 0 = plain mean.",
    ),
]
