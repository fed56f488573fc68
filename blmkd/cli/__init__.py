"""The ``blmkd`` command line: one module per command group, composed here.

Every command raises :class:`blmkd.errors.BlmkdError` for problems the user can fix; ``main``
turns those into one ``error: ...`` line and a non-zero exit, with no traceback.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import typing

import typer

# typer vendors click; its exceptions are the ones `standalone_mode=False` lets through.
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.models import ArgumentInfo, OptionInfo

from blmkd.cli import baseline, bench, compare, data, demo, distill, export, models, train
from blmkd.errors import BlmkdError
from blmkd.version import __version__

#: Set to 1 to see the full traceback of any error (user errors included).
ENV_DEBUG = "BLMKD_DEBUG"

#: The allowed range of every numeric option, by option name: ``(low, low_open, high, high_open)``
#: with ``None`` for no bound. NaN and ±inf are refused everywhere. A test checks that every numeric
#: option of every command has an entry, so a new option cannot slip through unchecked.
NUMERIC_BOUNDS: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "--atol": (0, True, None, False),
    "--bands": (1, False, None, False),
    "--batch": (1, False, None, False),
    "--block": (1, False, None, False),
    "--buffer": (0, False, None, False),
    "--calib-size": (1, False, None, False),
    "--class-balance": (0, False, 1, True),
    "--centre-weight": (0, False, 1, False),
    "--class-shrink": (0, False, None, False),
    "--cv-folds": (2, False, None, False),
    "--classes": (2, False, None, False),
    "--dkd-alpha": (0, False, None, False),
    "--dkd-beta": (0, False, None, False),
    "--ema": (0, False, 1, True),
    "--epochs": (1, False, None, False),
    "--eval-size": (1, False, None, False),
    "--fill": (None, False, None, False),  # any finite number
    "--hint-weight": (0, False, None, False),
    "--jobs": (1, False, None, False),
    "--label-smoothing": (0, False, 1, True),
    "--lambda-0": (0, False, 1, False),
    "--lambda-max": (0, False, 1, False),
    "--lr": (0, True, None, False),
    "--lr-warmup": (0, False, None, False),
    "--max-oa-drop": (0, False, None, False),
    "--min-agreement": (0, False, 1, False),
    "--patch": (1, False, None, False),
    "--patience": (0, False, None, False),
    "--runs": (1, False, None, False),
    "--seed": (0, False, 2**32 - 1, False),
    "--student-epochs": (1, False, None, False),
    "--teacher-epochs": (1, False, None, False),
    "--temperature": (0, True, None, False),
    "--threads": (1, False, None, False),
    "--tile": (1, False, None, False),
    "--trees": (1, False, None, False),
    "--train": (0, True, None, False),
    "--unlabelled": (0, False, None, False),
    "--val": (0, False, 1, True),
    "--warmup-epochs": (0, False, None, False),
    "--weight-decay": (0, False, None, False),
    "--window": (1, False, None, False),
}

app = typer.Typer(
    name="blmkd",
    help=(
        "Hyperspectral classifiers from the lab to the edge: train an SSA-Mamba teacher, distill a "
        "byte-latent Mamba student, quantize and export it (ONNX, TensorRT), benchmark it and write "
        "edge profiling reports. Datasets are registry names (see `blmkd datasets`) or file paths."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"blmkd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """blmkd command line."""


def _register() -> None:
    for group in (data, models, train, distill, baseline, compare, export, bench, demo):
        group.register(app)


def _reflow(doc: str) -> str:
    """A command's docstring with each paragraph on one line: typer's rich help keeps the source's
    line breaks, which then wrap raggedly at any terminal width."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_help(group: typer.Typer) -> None:
    for info in group.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = _reflow(info.callback.__doc__)
    for sub in group.registered_groups:
        _reflow_help(sub.typer_instance)


def _range_text(low, low_open, high, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '≥'} {low}"
    if high is not None:
        return f"{'<' if high_open else '≤'} {high}"
    return "a finite number"


def _bound_check(opt: str):
    low, low_open, high, high_open = NUMERIC_BOUNDS[opt]

    def check(value):
        if value is None:
            return value
        bad = isinstance(value, float) and not math.isfinite(value)
        bad = bad or (low is not None and (value <= low if low_open else value < low))
        bad = bad or (high is not None and (value >= high if high_open else value > high))
        if bad:
            raise BlmkdError(f"{opt} must be {_range_text(low, low_open, high, high_open)}, got {value}")
        return value

    return check


def numeric_options(group: typer.Typer):
    """``(command, option, OptionInfo, int or float)`` for every numeric option of every command in ``group``."""
    for info in group.registered_commands:
        cb = info.callback
        if cb is None:
            continue
        hints = typing.get_type_hints(cb, include_extras=True)
        # Under `from __future__ import annotations` every evaluation of an inline `Annotated[...,
        # typer.Option(...)]` makes a new OptionInfo; keep the evaluated ones, so that typer reads
        # the very objects given a callback here.
        cb.__annotations__ = {**cb.__annotations__, **hints}
        for name, hint in hints.items():
            if typing.get_origin(hint) is not typing.Annotated:
                continue
            base, *extra = typing.get_args(hint)
            kinds = [a for a in typing.get_args(base) if a is not type(None)] or [base]
            pinfo = next((m for m in extra if isinstance(m, (OptionInfo, ArgumentInfo))), None)
            if pinfo is None or kinds[0] not in (int, float):
                continue
            decl = (
                pinfo.default if isinstance(pinfo.default, str) and pinfo.default.startswith("--") else None
            )
            yield info.name or cb.__name__, decl or "--" + name.replace("_", "-"), pinfo, kinds[0]
    for sub in group.registered_groups:
        yield from numeric_options(sub.typer_instance)


def _bound_numbers(group: typer.Typer) -> None:
    # A callback per option, so that `app` checks them under CliRunner as well as under `main`.
    for _, opt, pinfo, _ in numeric_options(group):
        if opt in NUMERIC_BOUNDS and pinfo.callback is None:
            pinfo.callback = _bound_check(opt)


_register()
_reflow_help(app)
_bound_numbers(app)


def _fail(msg: str, code: int) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every error becomes one ``error: ...`` line and a non-zero exit.

    Bad input (a :class:`BlmkdError`, a bad option value or usage) exits with 2; a file-system
    failure (disk full, permissions) with 1; anything unexpected with 1 and its type. Set
    ``BLMKD_DEBUG=1`` to get the full traceback instead.
    """
    debug = os.environ.get(ENV_DEBUG, "") not in ("", "0")
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="blmkd", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:
        if debug:
            raise
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(exc.format_message().splitlines()[0] + hint, exc.exit_code)
    except typer.TyperException as exc:
        if debug:
            raise
        _fail(exc.format_message().splitlines()[0], exc.exit_code)
    except BlmkdError as exc:
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _fail(msg, exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        typer.secho("interrupted", fg="yellow", err=True)
        sys.exit(130)
    except OSError as exc:
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where} (set {ENV_DEBUG}=1 for the traceback)", 1)
    except Exception as exc:
        if debug:
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        _fail(f"unexpected {type(exc).__name__}: {text} (a bug; set {ENV_DEBUG}=1 for the traceback)", 1)
    if code not in (0, None):
        sys.exit(code)
