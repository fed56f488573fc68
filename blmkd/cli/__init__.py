"""The ``blmkd`` command line: one module per command group, composed here.

Every command raises :class:`blmkd.errors.BlmkdError` for problems the user can fix; ``main``
turns those into one ``error: ...`` line and a non-zero exit, with no traceback.
"""

from __future__ import annotations

import inspect
import sys

import typer

from blmkd import __version__
from blmkd.errors import BlmkdError

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
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """blmkd command line."""


def _register() -> None:
    # Imported here so that each group module can import `app` pieces without cycles.
    import importlib

    for mod in ("data", "models", "train", "distill", "baseline", "compare", "export", "bench", "demo"):
        try:
            m = importlib.import_module(f"blmkd.cli.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name == f"blmkd.cli.{mod}":
                continue  # that command group is not written yet
            raise
        m.register(app)


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


_register()
_reflow_help(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one ``error: ...`` line and a non-zero exit."""
    try:
        app(args=argv, prog_name="blmkd")  # standalone: usage errors and --help exit here
    except BlmkdError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        typer.secho(f"error: {msg}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="yellow", err=True)
        sys.exit(130)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
