"""Fixtures of the deployment tests: the local Lambda."""

from __future__ import annotations

from lifecycle_probe.testing import local_lambda

__all__ = ["local_lambda"]
