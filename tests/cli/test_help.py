"""`--help` of every command: it works, says what the command does, and reads as paragraphs."""

from __future__ import annotations

import re

import pytest
import typer.main
from typer.testing import CliRunner

from blmkd.cli import app

runner = CliRunner(env={"COLUMNS": "200"})

COMMANDS = [
    ["split"], ["models"], ["train-teacher"], ["evaluate"], ["distill"], ["train-student"], ["baseline"], ["compare"],
    ["export"], ["bench"], ["predict"], ["demo"], ["datasets"], ["datasets", "info"],
]  # fmt: skip


def test_root_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for cmd in {c[0] for c in COMMANDS}:
        assert f" {cmd} " in result.output


def _command(cmd: list[str]):
    """The command object typer builds for ``blmkd <cmd>``: its summary and declared parameters."""
    command = typer.main.get_command(app)
    for part in cmd:
        command = command.commands[part]
    return command


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_command_help(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, (result.output, result.exception)
    text = " ".join(result.output.split())
    assert f"Usage: blmkd {' '.join(cmd)}" in text
    command = _command(cmd)
    summary = " ".join(command.help.split("\n\n")[0].split())  # the docstring's first paragraph
    assert len(summary) > 20 and summary in text, summary
    # every parameter the command declares is listed: a hidden or dropped option would not be
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    assert params or cmd == ["datasets"]
    for p in params:
        if p.param_type_name == "argument":
            assert re.search(rf"^│[ *]+{re.escape(p.name)}(\.\.\.)? ", result.output, re.M), (
                p.name
            )  # Arguments panel
        for opt in p.opts if p.param_type_name == "option" else ():
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", result.output), opt


def test_help_paragraphs_are_reflowed_not_broken_where_the_source_wraps():
    # The docstring wraps after "leaks"; a 200-column help must not break the sentence there.
    out = runner.invoke(app, ["distill", "--help"]).output
    line = next(x for x in out.splitlines() if "no test pixel leaks" in x)
    assert "no test pixel leaks through the teacher" in line
