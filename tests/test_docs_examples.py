"""The examples of README.md and docs/ run against the installed package, so they cannot drift.

Every fenced ``python`` and ``bash``/``sh``/``shell`` block of a document is executed, in order,
in one fresh folder per document (holding a ``configs`` link, as a checkout has), Python blocks
sharing one namespace. ``astropt ...`` command lines run in this process through the CLI's
``main`` (no interpreter start per line); a shell block with any other command runs in bash
with the installed ``astropt`` on ``PATH``.

A block preceded by ``<!-- not-run: REASON -->`` (needs a GPU, the network, or hours) is only
checked: Python compiles and its ``from astropt... import`` names exist; every ``astropt``
command line in a shell block parses with the real argument parser (so a renamed flag or
command fails here). Fences of other languages (``text``, ``yaml``, ...) are prose; a fence
without a language is an error, so that nothing is skipped by accident. The executed
tutorials (``{code-cell}`` blocks of MyST notebooks) are run by the docs build instead.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
DOCUMENTS = [d for d in DOCUMENTS if "_build" not in d.parts]
FENCE = re.compile(
    r"(?:<!--\s*not-run:\s*(?P<reason>[^>]*?)\s*-->[ \t]*\n)?"  # the marker, right above
    r"^(?P<fence>```+)(?P<lang>[^\s`]*)[^\n]*\n(?P<code>.*?)^(?P=fence)[ \t]*$",
    re.S | re.M,
)
PYTHON, SHELL = {"python", "py"}, {"bash", "sh", "shell"}


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced code blocks of a Markdown document, with their not-run reasons."""
    text = doc.read_text(encoding="utf-8")
    found = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start("fence")) + 1
        found.append(Block(doc, line, m["lang"].lower(), m["code"], m["reason"]))
    return found


def command_lines(code: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, blanks and comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def astropt_argv(line: str) -> list[str] | None:
    """The arguments of the ``astropt`` command on a line (also ``$(which astropt) ...`` under
    torchrun/srun), without the README's ``[--optional flags]`` notation; None if none."""
    tokens = shlex.split(line, comments=True)
    starts = [i for i, t in enumerate(tokens) if t == "astropt" or t.endswith("astropt)")]
    if not starts:
        return None
    argv, depth = [], 0
    for token in tokens[starts[0] + 1:]:
        depth += token.count("[")
        if depth == 0:
            argv.append(token)
        depth -= token.count("]")
    return argv


def check_parses(argv: list[str], where: str) -> None:
    from astropt.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `astropt {' '.join(argv)}` does not parse: {err.getvalue().strip()}")


def check_imports(code: str, where: str) -> None:
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "astropt":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"


def check_block(block: Block) -> None:
    """A not-run block: Python compiles and imports; every astropt command line parses."""
    if block.lang in PYTHON:
        check_imports(block.code, block.where)
    for line in command_lines(block.code) if block.lang in SHELL else []:
        argv = astropt_argv(line)
        if argv is not None:
            check_parses(argv, block.where)


def run_shell(block: Block, cwd: Path) -> None:
    from astropt.cli import main

    lines = command_lines(block.code)
    if all(ln.startswith("astropt ") for ln in lines):
        for ln in lines:
            try:
                rc = main(astropt_argv(ln))
            except SystemExit as exc:  # --help
                rc = exc.code or 0
            assert rc == 0, f"{block.where}: `{ln}` failed"
        return
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{block.where}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: str(d.relative_to(ROOT)))
def test_examples_run(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks(doc):
        assert block.lang, f"{block.where}: a fence without a language (use text, python, bash, ...)"
        if block.lang not in PYTHON | SHELL:
            continue
        if block.not_run is not None:
            assert block.not_run, f"{block.where}: a not-run marker needs its reason"
            check_block(block)
        elif block.lang in PYTHON:
            exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 (the example)
        else:
            run_shell(block, tmp_path)


def test_markers_and_checks_catch_drift(tmp_path: Path) -> None:
    """The extractor sees markers, the parser check rejects an unknown flag, the README
    notation for optional flags is understood, and an unmarked block is executed."""
    doc = tmp_path / "x.md"
    doc.write_text("<!-- not-run: needs a GPU -->\n```bash\nastropt train --no-such-flag\n```\n\n"
                   "```python\nx = 1\n```\n\n```\nbare\n```\n", encoding="utf-8")
    found = blocks(doc)
    assert [(b.lang, b.not_run) for b in found] == [("bash", "needs a GPU"), ("python", None), ("", None)]
    with pytest.raises(pytest.fail.Exception, match="does not parse"):
        check_block(Block(ROOT / "README.md", 1, "bash", found[0].code, "x"))
    assert astropt_argv("astropt export runs/x --out m [--step 400]   # note") == ["export", "runs/x", "--out", "m"]
    assert astropt_argv("srun torchrun --nnodes=4 $(which astropt) train --resume") == ["train", "--resume"]
    with pytest.raises(AssertionError, match="has no"):
        check_imports("from astropt import NoSuchName", "x.md:1")
