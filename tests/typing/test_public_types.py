"""The public API as a type checker sees it: mypy runs on a small user module.

A probed handler keeps the handler's own signature (bare ``@probe`` and ``@probe(...)``,
plain and ``async``), and ``current()`` returns ``LifecycleFacts``, whose fields cannot be
assigned, indexed or counted. The module is checked in strict mode, as a user would.
"""

import re
import subprocess
import sys
import textwrap

USER_MODULE = """
from typing import Any

import lifecycle_probe
from lifecycle_probe import LifecycleFacts, current, probe


@probe
def bare(event: dict[str, Any], context: object) -> dict[str, int]:
    return {"n": 1}


@probe(exporter="none", proactive_init_gap_ms=500)
def with_options(event: list[str], context: object) -> str:
    return event[0]


@probe
async def asynchronous(event: bytes, context: None) -> int:
    return len(event)


reveal_type(bare)
reveal_type(with_options)
reveal_type(asynchronous)
facts: LifecycleFacts = current()
reveal_type(facts.invocation_seq)
reveal_type(facts.start)
reveal_type(lifecycle_probe.__version__)
facts.start = "warm"
facts[0]
len(facts)
"""


def mypy_output(tmp_path):
    module = tmp_path / "user_handler.py"
    module.write_text(textwrap.dedent(USER_MODULE))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            "",  # the user's settings, not this project's
            "--python-version",
            "3.10",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--hide-error-context",
            "--no-error-summary",
            str(module),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the three misuses below
    # "user_handler.py:32: note: Revealed type is ..." -> (32, "note", "Revealed ...")
    found = []
    for line in result.stdout.splitlines():
        match = re.match(r".*user_handler\.py:(\d+): (\w+): (.*)", line)
        assert match, line
        # (mypy before 2.0 spells builtins with their module: "builtins.int")
        found.append((int(match[1]), match[2], match[3].replace("builtins.", "")))
    return found


def test_probed_handlers_keep_their_types_and_facts_are_read_only_named_fields(tmp_path):
    found = mypy_output(tmp_path)
    notes = [text for _, kind, text in found if kind == "note"]
    assert notes == [
        'Revealed type is "def (event: dict[str, Any], context: object) -> dict[str, int]"',
        'Revealed type is "def (event: list[str], context: object) -> str"',
        'Revealed type is "def (event: bytes, context: None) -> typing.Coroutine[Any, Any, int]"',
        'Revealed type is "int"',
        'Revealed type is "str | None"',
        'Revealed type is "str"',  # __version__, not __getattr__'s object
    ]
    errors = [text for _, kind, text in found if kind == "error"]
    assert len(errors) == 3, errors
    assert 'Property "start" defined in "LifecycleFacts" is read-only' in errors[0]
    assert 'Value of type "LifecycleFacts" is not indexable' in errors[1]
    assert 'Argument 1 to "len" has incompatible type "LifecycleFacts"' in errors[2]
