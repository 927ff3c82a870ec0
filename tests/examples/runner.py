"""Runs an example's README commands and normalises what they print.

Each ``examples/<topic>/README.md`` holds one ``sh`` block (the commands, run from the
repository root) and, after it, one ``text`` block (what they print). Times, ports and
the list of slowest imports (which ranks modules by a millisecond or two) differ from run
to run; everything else must be exactly as shown.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOPICS = ("decorator", "zero-code", "connections", "leaks", "powertools", "snapstart")


def blocks(readme: str) -> tuple[str, str]:
    """(commands, shown output) of a README."""
    commands = re.search(r"```sh\n(.*?)```", readme, re.S)
    shown = re.search(r"```text\n(.*?)```", readme, re.S)
    assert commands is not None, "README needs a sh block"
    assert shown is not None, "README needs a text block"
    return commands.group(1), shown.group(1)


def run(commands: str, scratch: Path) -> str:
    """Run the commands with bash from the repository root, /tmp/ replaced by ``scratch``."""
    script = commands.replace("/tmp/", f"{scratch}/")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def normalise(text: str) -> str:
    kept: list[str] = []
    in_imports = False
    for line in text.splitlines():
        if line.startswith("slowest imports at INIT"):
            in_imports = True
            continue
        if in_imports and line.startswith("  "):
            continue
        in_imports = False
        kept.append(line.rstrip())
    out = "\n".join(kept).strip() + "\n"
    out = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", out)
    out = re.sub(r"\d+(\.\d+)? (ms|s)\b", r"<t> \2", out)
    return re.sub(
        r"read \d+ lines from (\d+) sources: \d+ records, \d+ lines",
        r"read <n> lines from \1 sources: <n> records, <n> lines",
        out,
    )
