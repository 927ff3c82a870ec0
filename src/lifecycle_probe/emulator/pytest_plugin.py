"""A pytest fixture for the local Lambda: ``local_lambda``.

Use it from a ``conftest.py`` (``from lifecycle_probe.emulator.pytest_plugin import
local_lambda``) or as a plugin (``pytest -p lifecycle_probe.emulator.pytest_plugin``)::

    def test_warm_reuse(local_lambda):
        emulator = local_lambda("app.handler", "src", timeout_s=2)
        assert emulator.invoke({}).cold
        assert not emulator.invoke({}).cold

Every local Lambda the factory made is closed at teardown, also when the test fails,
so no runtime process outlives the test. ``max_concurrency=N`` (a ``FunctionConfig``
field) gives Lambda Managed Instances: N worker processes per environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from lifecycle_probe.emulator.function import FunctionConfig
from lifecycle_probe.emulator.local_lambda import LocalLambda

__all__ = ["LocalLambdaFactory", "local_lambda"]

_LOCAL_LAMBDA_OPTIONS = frozenset(
    {
        "idle_timeout_s",
        "snapshot_pause_s",
        "init_timeout_s",
        "shutdown_grace_s",
        "provisioned_concurrency",
        "log_dir",
    }
)


class LocalLambdaFactory(Protocol):
    """Makes started local Lambdas that the fixture closes at teardown.

    Call it with a :class:`FunctionConfig`, or with ``handler`` and ``code_dir`` plus
    any ``FunctionConfig`` field as a keyword. Keywords naming :class:`LocalLambda`
    options (``idle_timeout_s``, ``snapshot_pause_s``, ``init_timeout_s``,
    ``shutdown_grace_s``, ``provisioned_concurrency``, ``log_dir``) go to it.
    """

    def __call__(
        self,
        function: FunctionConfig | str,
        code_dir: str | os.PathLike[str] | None = None,
        /,
        **options: Any,
    ) -> LocalLambda: ...


@pytest.fixture
def local_lambda() -> Iterator[LocalLambdaFactory]:
    """A factory of started :class:`LocalLambda` instances, all closed at teardown."""
    made: list[LocalLambda] = []

    def factory(
        function: FunctionConfig | str,
        code_dir: str | os.PathLike[str] | None = None,
        /,
        **options: Any,
    ) -> LocalLambda:
        lambda_options = {k: v for k, v in options.items() if k in _LOCAL_LAMBDA_OPTIONS}
        function_options = {k: v for k, v in options.items() if k not in _LOCAL_LAMBDA_OPTIONS}
        if isinstance(function, FunctionConfig):
            if code_dir is not None or function_options:
                raise TypeError("pass either a FunctionConfig or handler, code_dir and fields")
            config = function
        else:
            config = FunctionConfig(function, Path(code_dir or "."), **function_options)
        emulator = LocalLambda(config, **lambda_options)
        made.append(emulator)
        return emulator.start()

    try:
        yield factory
    finally:
        for emulator in reversed(made):
            emulator.close()
