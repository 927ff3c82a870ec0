"""Stands in for the OpenTelemetry Lambda layer's otel_wrapper: at import, imports the
module named by ``ORIG_HANDLER`` (``import_module``) and takes its handler (``getattr``),
which the AwsLambdaInstrumentor patched at Python startup. Each call is noted in
``OTEL_STAND_IN_NOTES`` (with the type of the handler it calls: ``FunctionWrapper`` when
the instrumentor patched it)."""

import os
from importlib import import_module

_module_name, _, _function_name = os.environ["ORIG_HANDLER"].rpartition(".")
_handler = getattr(import_module(_module_name.replace("/", ".")), _function_name)


def lambda_handler(event, context):
    notes = os.environ.get("OTEL_STAND_IN_NOTES")
    if notes:
        with open(notes, "a") as file:
            file.write(f"{os.environ['ORIG_HANDLER']} {type(_handler).__name__}\n")
    return _handler(event, context)
