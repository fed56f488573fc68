"""Parameter and FLOP counting, and the `blmkd models` table built on them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from blmkd.cli import app, main
from blmkd.flops import count_flops, count_params
from blmkd.models import create_model


def test_count_params():
    assert count_params(nn.Linear(3, 4)) == 3 * 4 + 4
    bn = nn.BatchNorm1d(5)  # running statistics are buffers, not parameters
    assert count_params(bn) == 10


def test_count_flops_linear_is_per_sample():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3, bias=False))
    expected = 2 * 10 * 20 + 2 * 20 * 3  # multiply-adds ×2; ReLU and biases are not counted
    assert count_flops(model, torch.randn(1, 10)) == expected
    assert count_flops(model, torch.randn(8, 10)) == expected


def test_count_flops_conv_and_restores_training_mode():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)).train()
    flops = count_flops(model, torch.randn(2, 3, 5, 5))
    assert flops == 2 * (5 * 5) * 4 * (3 * 3 * 3)
    assert model.training and int(model[1].num_batches_tracked) == 0  # ran in eval mode


def test_teacher_flops_grow_with_the_patch():
    model = create_model("ssa_mamba_test", 12, 4)
    f5, f7 = count_flops(model, torch.zeros(1, 12, 5, 5)), count_flops(model, torch.zeros(1, 12, 7, 7))
    assert 0 < f5 < f7


runner = CliRunner(env={"COLUMNS": "200"})


def test_models_command_lists_the_presets():
    result = runner.invoke(
        app, ["models", "--bands", "12", "--classes", "4", "--patch", "5", "--family", "teacher"]
    )
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.output
    assert "ssa_mamba_test" in out and "ssa_mamba" in out and "12 bands" in out and "5×5" in out
    assert "student" not in out  # only teachers in the table
    params = count_params(create_model("ssa_mamba_test", 12, 4))
    row = next(line for line in out.splitlines() if "ssa_mamba_test" in line)
    assert f"{params / 1e3:.2f} k" in row


@pytest.mark.parametrize(
    "args,message",
    [(["models", "--family", "robots"], "--family must be one of"), (["models", "--patch", "4"], "odd")],
)
def test_models_command_user_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0


def test_models_table_is_not_cut_when_stdout_is_a_pipe():
    # A log or CI: stdout is a pipe and COLUMNS is unset; rich's 80 columns would cut the
    # descriptions (and, in wider tables, preset names and numbers) with "…".
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run(
        [sys.executable, "-m", "blmkd", "models", "--family", "student"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert "…" not in out
    row = next(line for line in out.splitlines() if "blm_b" in line)
    assert "under 1/100 of the teacher" in row  # one line per preset, not wrapped at column 80
