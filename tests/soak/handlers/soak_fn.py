"""The soak's function: no probe of its own (the soak runs it behind the zero-code entry,
``_HANDLER=lifecycle_probe.handler.handler``, and bare as the baseline twin).

INIT: sleeps ``SOAK_INIT_SLEEP_S``; when the soak has left a token file
``init-fail`` in ``SOAK_CONTROL_DIR``, the first on-demand environment to start takes it
(an atomic rename) and fails its INIT.

The event says what to do: ``{"sleep_s": S}``, ``{"raise": KIND}`` (see ``_raise``),
``{"i": N}`` (echoed back).
"""

from __future__ import annotations

import os
import sys
import time


class PaymentDeclined(Exception):
    """An exception class of the function's own."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


def _take_init_failure_token() -> bool:
    control = os.environ.get("SOAK_CONTROL_DIR")
    if not control or os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != "on-demand":
        return False
    token = os.path.join(control, "init-fail")
    try:
        os.rename(token, f"{token}.taken-by-{os.getpid()}")
    except OSError:
        return False
    return True


time.sleep(float(os.environ.get("SOAK_INIT_SLEEP_S", "0.02")))
if _take_init_failure_token():
    raise ConnectionError("soak: INIT failure asked for (the database is unreachable)")
COUNTER = 0


def _raise(kind: str) -> None:
    if kind == "value_error":
        raise ValueError("card declined")
    if kind == "own_class":
        raise PaymentDeclined("order 42")
    if kind == "chained":
        lookup: dict[str, int] = {}
        try:
            lookup["missing"]
        except KeyError as exc:
            raise RuntimeError("lookup failed") from exc
    if kind == "unprintable":
        raise Unprintable()
    if kind == "no_message":
        raise LookupError
    if kind == "system_exit":
        sys.exit(3)
    if kind == "keyboard_interrupt":
        raise KeyboardInterrupt
    raise AssertionError(f"unknown kind {kind!r}")


def handler(event, context):
    global COUNTER
    COUNTER += 1
    if event.get("sleep_s"):
        time.sleep(event["sleep_s"])
    if "raise" in event:
        _raise(event["raise"])
    return {"i": event.get("i"), "counter": COUNTER, "pid": os.getpid()}
