"""A pytest fixture for the local Lambda: ``local_lambda``.

Installing ``lifecycle-probe`` registers this module with pytest (the ``pytest11`` entry
point), so the fixture is there in every test, with no import in a ``conftest.py``::

    def test_warm_reuse(local_lambda):
        emulator = local_lambda("app.handler", "src", timeout_s=2)
        assert emulator.invoke({}).cold
        assert not emulator.invoke({}).cold

Every local Lambda the factory made is closed at teardown, also when the test fails,
so no runtime process outlives the test. ``max_concurrency=N`` (a ``FunctionConfig``
field) gives Lambda Managed Instances: N worker processes per environment.

pytest loads this module at start-up in every project that has the package installed,
most of which never ask for the fixture: it imports nothing but pytest there. The
emulator is imported when a test first asks for a local Lambda, and the runtime
processes need ``awslambdaric`` (the ``emulator`` extra): without it, only the tests
that use the fixture fail, with the command that installs it.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import pytest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from lifecycle_probe.emulator.function import FunctionConfig
    from lifecycle_probe.emulator.local_lambda import LocalLambda

__all__ = ["LocalLambdaFactory", "local_lambda"]

MISSING_RUNTIME_CLIENT = (
    "the local_lambda fixture runs handlers with AWS's Runtime Interface Client, which is "
    "not installed: pip install 'lifecycle-probe[emulator]'"
)

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
    from importlib.util import find_spec

    # Every runtime process would die at once on "No module named awslambdaric", and the
    # test fail on an INIT timeout far from the cause: say it here, once.
    if find_spec("awslambdaric") is None:
        pytest.fail(MISSING_RUNTIME_CLIENT, pytrace=False)
    from pathlib import Path

    from lifecycle_probe.emulator.function import FunctionConfig
    from lifecycle_probe.emulator.local_lambda import LocalLambda

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
