"""The README's layout section names exactly the files of ``src/lifecycle_probe``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "lifecycle_probe"


def layout_files() -> set[str]:
    """The files the README's layout tree names, as paths under the package."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Layout", 1)[1]
    tree = section.split("```text\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    directories: list[tuple[int, str]] = []  # (indent, path) of the open directories
    for line in tree.splitlines()[1:]:  # past "src/lifecycle_probe/"
        if not line.strip() or line.strip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        while directories and directories[-1][0] >= indent:
            directories.pop()
        prefix = "".join(path for _, path in directories)
        if name.endswith("/"):
            directories.append((indent, name))
        else:
            named.add(prefix + name)
    return named


def test_the_layout_tree_names_every_file_of_the_package_and_no_other():
    on_disk = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    named = layout_files()
    assert named - on_disk == set(), "named in the README but not in src/"
    assert on_disk - named == set(), "in src/ but not in the README's layout"


def test_the_parser_sees_nested_directories():
    # the check above would pass vacuously if the tree were never read
    named = layout_files()
    assert {"decorator.py", "sinks/otel/spans.py", "demo/functions/orders.py"} <= named
    assert all(re.fullmatch(r"[\w/]+\.py", name) for name in named)
