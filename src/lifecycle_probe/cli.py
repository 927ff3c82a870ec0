"""``lifecycle-probe``: the demo, the local Lambda and the report from the command line."""

from __future__ import annotations

import argparse
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``lifecycle-probe`` argument parser with its subcommands."""
    from lifecycle_probe.demo import add_arguments as add_demo_arguments
    from lifecycle_probe.emulator.cli import add_arguments as add_emulate_arguments
    from lifecycle_probe.report import add_arguments as add_report_arguments

    parser = argparse.ArgumentParser(
        prog="lifecycle-probe",
        description="See the AWS Lambda execution lifecycle of Python functions.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_arguments(
        commands.add_parser(
            "demo",
            help="run the bundled example functions in the local Lambda and show their lifecycle",
            description="Runs the bundled example functions in the local Lambda (AWS's own "
            "runtime client, no AWS account, no Docker) through cold starts, warm reuse, a "
            "traffic spike, freezes, provisioned, proactive and SnapStart initialisation, "
            "and prints what the probe recorded beside the emulator's ground truth.",
        )
    )
    add_emulate_arguments(
        commands.add_parser(
            "emulate",
            help="run a handler in the local Lambda",
            description="Runs HANDLER (module.function) in real runtime processes behind a "
            "local Lambda Runtime API, one event per line of --events.",
        )
    )
    add_report_arguments(
        commands.add_parser(
            "report",
            help="summarise what the probe exported: starts, INIT, reuse, idle, advice",
            description="Reads what the probe exported (OTLP JSON lines, EMF and the probe's "
            "JSON log lines, or a CloudWatch Logs log group) and prints the cold-start "
            "ratio, INIT duration percentiles and slowest imports, reuse per environment, "
            "idle (frozen) times, stale connections, leaks, INIT failures, errors, timeouts "
            "and advice with its evidence; --html writes a self-contained timeline. "
            "Malformed lines are counted and reported, never fatal.",
        )
    )
    for command in commands.choices.values():
        # An argument a subcommand does not know is its to report, with its own usage.
        command.set_defaults(command_parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lifecycle-probe`` console script."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "demo":
        from lifecycle_probe.demo import run as run_demo

        return run_demo(args)
    if args.command == "report":
        from lifecycle_probe.report import run as run_report

        return run_report(args)
    from lifecycle_probe.emulator.cli import run as run_emulate

    return run_emulate(args)


if __name__ == "__main__":
    sys.exit(main())
