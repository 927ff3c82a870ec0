"""The local Lambda fixture for the report's tests that run real runtime processes."""

from lifecycle_probe.testing import local_lambda

__all__ = ["local_lambda"]
