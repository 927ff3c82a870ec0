"""The command line: an argument a subcommand does not know is reported with its usage."""

from __future__ import annotations

import pytest

from lifecycle_probe.cli import main


@pytest.mark.parametrize(
    ("command", "given"), [("demo", []), ("emulate", ["app.handler"]), ("report", ["out.jsonl"])]
)
def test_an_unknown_argument_is_reported_with_the_subcommands_usage(command, given, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, *given, "--bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: lifecycle-probe {command} ")
    assert err.rstrip().endswith(
        f"lifecycle-probe {command}: error: unrecognized arguments: --bogus"
    )
