"""Headless Chromium (Debian's ``chromium``) for the HTML report's tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return found


@dataclass
class Page:
    dom: str
    console: list[str]
    wall_s: float

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.dom))

    @property
    def rendered_ms(self) -> int | None:
        match = re.search(r'data-rendered-ms="(\d+)"', self.dom)
        return None if match is None else int(match.group(1))


def open_page(path: Path, *, screenshot: Path | None = None, size: str = "1400,1000") -> Page:
    """Load ``path``; the DOM after its scripts ran (or a screenshot) and its console lines."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}"]
        command.append(f"--screenshot={screenshot}" if screenshot else "--dump-dom")
        started = time.monotonic()
        done = subprocess.run(
            [*command, path.resolve().as_uri()], capture_output=True, text=True, timeout=120
        )
        wall_s = time.monotonic() - started
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return Page(done.stdout, console, wall_s)
