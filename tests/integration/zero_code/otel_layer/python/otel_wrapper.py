"""Stands in for the OpenTelemetry Lambda layer's otel_wrapper: imports the module of
``ORIG_HANDLER`` and calls its handler; notes each call in ``OTEL_STAND_IN_NOTES``."""

import os
from importlib import import_module

_module_name, _, _function_name = os.environ["ORIG_HANDLER"].rpartition(".")
_handler = getattr(import_module(_module_name.replace("/", ".")), _function_name)


def lambda_handler(event, context):
    notes = os.environ.get("OTEL_STAND_IN_NOTES")
    if notes:
        with open(notes, "a") as file:
            file.write(os.environ["ORIG_HANDLER"] + "\n")
    return _handler(event, context)
