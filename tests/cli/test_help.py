"""`--help` of every command: it works, says what the command does, and reads as paragraphs."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_command_help(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"Usage: blmkd {' '.join(cmd)}" in " ".join(result.output.split())
    assert "--help" in result.output


def test_help_paragraphs_are_reflowed_not_broken_where_the_source_wraps():
    # The docstring wraps after "leaks"; a 200-column help must not break the sentence there.
    out = runner.invoke(app, ["distill", "--help"]).output
    line = next(x for x in out.splitlines() if "no test pixel leaks" in x)
    assert "no test pixel leaks through the teacher" in line
