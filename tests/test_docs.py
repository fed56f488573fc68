"""Docs that cannot rot silently.

Every ``blmkd ...`` command line shown in a shell code block of ``README.md`` or ``docs/*.md`` is
parsed by the real CLI (typer's click commands, ``make_context``): an unknown command or option, a
value of the wrong type, a missing required option or a stray argument fails. The README's
quickstart must be the two commands that the Makefile defines and CI runs, and the README's links
into ``docs/`` must name a page and a heading that exist.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest
import typer

from blmkd.checkpoint import load_checkpoint
from blmkd.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}

CLI = typer.main.get_command(app)


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """Fenced code blocks as (language, line number of the first body line, body lines)."""
    blocks, lang, start, body = [], None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(2).lower(), n + 1, []
        elif fence and lang is not None:
            blocks.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def shell_commands(lines: list[str], first: int) -> list[tuple[int, str]]:
    """(line number, command) per logical command line: backslash continuations joined."""
    out, acc, at = [], "", first
    for n, line in enumerate(lines, first):
        if not acc:
            at = n
        if line.rstrip().endswith("\\"):
            acc += line.rstrip()[:-1] + " "
            continue
        acc += line
        if acc.strip():
            out.append((at, acc.strip()))
        acc = ""
    return out


def blmkd_args(command: str) -> list[str] | None:
    """The arguments after the ``blmkd`` word of a shell command (``-m blmkd`` and paths to the
    console script included), up to the first shell operator; None if it does not run blmkd."""
    tokens = shlex.split(command, comments=True)
    for i, tok in enumerate(tokens):
        if tok == "blmkd" or tok.endswith("/blmkd"):
            args = []
            for t in tokens[i + 1 :]:
                if t in SHELL_OPERATORS:
                    break
                args.append(t)
            return args
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in DOC_FILES:
        for lang, first, body in code_blocks(path.read_text(encoding="utf-8")):
            if lang not in SHELL_LANGS:
                continue
            for n, command in shell_commands(body, first):
                args = blmkd_args(command)
                if args is not None:
                    found.append((f"{path.relative_to(ROOT)}:{n}", args))
    return found


def parse(args: list[str]) -> None:
    """Parse ``blmkd ARGS`` as the CLI would, without running the command; raise on any error."""
    cmd, name, parent = CLI, "blmkd", None
    while hasattr(cmd, "resolve_command"):  # a command group
        ctx = cmd.make_context(name, [], parent=parent, resilient_parsing=True)
        if not args:
            if not getattr(cmd, "invoke_without_command", False):
                raise AssertionError(f"`{name}` needs a command")
            return
        word = args[0]
        name, cmd, args = cmd.resolve_command(ctx, args)
        if cmd is None:  # resilient parsing returns no command instead of failing
            raise AssertionError(f"No such command '{word}'")
        parent = ctx
    try:
        cmd.make_context(name, list(args), parent=parent)
    except typer.Exit as exc:  # --help and the like
        if exc.exit_code != 0:
            raise


COMMANDS = documented_commands()


@pytest.mark.parametrize("args", [a for _, a in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(args):
    parse(args)


def test_commands_are_found_in_the_readme_and_every_stage_guide():
    where = {w.split(":")[0] for w, _ in COMMANDS}
    guides = [
        "data-and-splits",
        "teachers",
        "distillation",
        "export-and-quantization",
        "benchmarks-and-reports",
    ]
    assert "README.md" in where and all(f"docs/{g}.md" in where for g in guides), sorted(where)
    shown = {a[0] for _, a in COMMANDS if a}
    # The README's tour runs through every stage.
    readme = {a[0] for w, a in COMMANDS if w.startswith("README.md") and a}
    assert {"datasets", "split", "train-teacher", "distill", "export", "bench", "predict"} <= readme, readme
    assert shown <= set(CLI.commands), shown - set(CLI.commands)


@pytest.mark.parametrize(
    "line,error",
    [
        ("blmkd distill --teacher runs/t --no-such-option 1", "No such option: --no-such-option"),
        ("blmkd trian-teacher --epochs 3", "No such command 'trian-teacher'"),
        ("blmkd train-teacher --epochs three", "valid integer"),
        ("blmkd distill --student blm_t", "Missing parameter: teacher"),
        ("blmkd export runs/student extra --onnx", r"unexpected extra argument\(s\) \(extra\)"),
        ("blmkd datasets inf indian_pines", "No such command 'inf'"),
    ],
)
def test_the_check_rejects_broken_command_lines(line, error):
    with pytest.raises(Exception, match=error):
        parse(blmkd_args(line))


def test_continuation_lines_and_comments_are_read_as_one_command():
    body = [
        "torchrun --nproc_per_node 2 -m blmkd train-teacher \\",
        "    --epochs 3 --out runs/x   # comment",
    ]
    ((n, command),) = shell_commands(body, 10)
    assert n == 10 and blmkd_args(command) == ["train-teacher", "--epochs", "3", "--out", "runs/x"]
    assert blmkd_args("python -c 'from blmkd.data import load_scene'") is None


# ── the quickstart is what CI runs ─────────────────────────────────────────────────────────────


def _section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert m, f"README has no '## {title}' section"
    return m.group(1)


def _recipe(makefile: str, target: str) -> list[str]:
    m = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, flags=re.M)
    assert m, f"Makefile has no {target} target"
    return [line.strip() for line in m.group(1).splitlines()]


def test_readme_quickstart_is_make_demo_and_make_test():
    section = _section(README.read_text(encoding="utf-8"), "Install and quickstart")
    (lang, first, body), *_ = code_blocks(section)
    commands = [shlex.join(shlex.split(c, comments=True)) for _, c in shell_commands(body, first)]
    assert lang == "bash" and commands == ["make demo", "make test"]


def test_ci_runs_the_quickstart_test_command_and_the_docs_build():
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci = [ln for ln in ci if ln and not ln.startswith("#")]
    assert "make test" in ci and "make docs" in ci
    assert ci.index("make test") < ci.index("make docs")


def test_makefile_targets_run_the_demo_the_tests_and_a_strict_docs_build():
    makefile = (ROOT / "Makefile").read_text()
    assert any(re.search(r"/blmkd demo$", line) for line in _recipe(makefile, "demo"))
    assert any(re.search(r"-m pytest\b", line) for line in _recipe(makefile, "test"))
    assert any(re.search(r"/mkdocs build --strict\b", line) for line in _recipe(makefile, "docs"))


# ── the README's links into docs/ ─────────────────────────────────────────────────────────────


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs' toc extension (and GitHub, for these headings) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^(```|~~~).*?^\1", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def test_slug_matches_mkdocs_for_headings_with_code_and_punctuation():
    assert slug("Options shared by `train-teacher`, `train-student` and `distill`") == (
        "options-shared-by-train-teacher-train-student-and-distill"
    )
    assert slug("The paper's schedule") == "the-papers-schedule"


README_LINKS = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("target,anchor", README_LINKS, ids=[f"{t}#{a}" for t, a in README_LINKS])
def test_readme_links_into_docs_resolve(target, anchor):
    path = ROOT / target
    assert path.is_file(), target
    if anchor:
        assert anchor in anchors(path), f"{target} has no heading for #{anchor}"


def test_readme_links_every_headline_to_the_results_page():
    assert sum(t == "docs/results.md" and bool(a) for t, a in README_LINKS) >= 5


def test_python_api_example_distills_a_student(ip_crop_path, tmp_path, monkeypatch, capsys):
    """The Python example of docs/python-api.md, run as written on a crop of Indian Pines with one
    epoch and the tiny presets: it trains a teacher, distils a student and prints only its line."""
    page = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    code = "\n".join(next(body for lang, _, body in code_blocks(page) if lang == "python"))
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    for old, new in (('"indian_pines"', repr(str(ip_crop_path))), ('"ssa_mamba_s"', '"ssa_mamba_test"'),
                     ('"blm_t"', '"blm_test"')):  # fmt: skip
        assert old in code, old
        code = code.replace(old, new)
    code, n = re.subn(r"\bepochs=\d+", "epochs=1", code)
    assert n == 2
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "docs/python-api.md", "exec"), scope)
    student = scope["student"]
    assert student.checkpoint.resolve() == tmp_path / "runs" / "student" / "best.safetensors"
    meta = load_checkpoint(student.checkpoint).meta
    assert meta["model"]["name"] == "blm_test" and meta["teacher"]["model"] == "ssa_mamba_test"
    assert meta["kd"]["temperature"] == 2.0 and meta["kd"]["lambda_max"] == 0.5
    assert meta["training"]["lr"] == 3e-3 and meta["training"]["epochs"] == 1
    assert student.test == meta["metrics"]["test"] and 0 < student.test["oa"] <= 1
    assert [r["role"] for r in student.side_by_side[0]["rows"]] == ["teacher", "student"]
    assert (
        scope["teacher"].test["oa"]
        == load_checkpoint(tmp_path / "runs" / "teacher").meta["metrics"]["test"]["oa"]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("student OA "), out  # the API itself prints nothing
