"""The README's examples, taken from the README itself, so tests run them as printed."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DBAPI_INTRO = "From Python, with the DB-API 2.0 client"


def dbapi_example() -> str:
    """The first Python block after the DB-API introduction."""
    text = README.read_text()
    after = text[text.index(DBAPI_INTRO) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match, "the README has no Python block after its DB-API introduction"
    return match.group(1)


def sql_commands() -> list[list[str]]:
    """The arguments of the `sixfold sql` writes the README runs before that example."""
    text = README.read_text()
    before = text[: text.index(DBAPI_INTRO)]
    commands = []
    for line in before.splitlines():
        if line.startswith(".venv/bin/sixfold sql ") and "--reader" not in line:
            commands.append(shlex.split(line, comments=True)[1:])
    assert commands, "the README shows no `sixfold sql` command before the DB-API example"
    return commands


def run_dbapi_example(env: dict[str, str], cwd: Path, timeout_s: float = 120) -> str:
    """Run the DB-API example as printed (in `cwd`, with `env`); what it printed."""
    ran = subprocess.run(
        [sys.executable, "-c", dbapi_example()],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.strip()
