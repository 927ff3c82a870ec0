"""tests/services.py: a missing service or library skips, or fails under the CI switch."""

from __future__ import annotations

import pytest

from tests.services import REQUIRE_SERVICES, mark_service_tests, require_module, unavailable

MISSING = "lifecycle_probe_no_such_module"


def test_a_missing_library_skips_with_the_reason(monkeypatch):
    monkeypatch.delenv(REQUIRE_SERVICES, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} cannot be imported"):
        require_module(MISSING)


def test_a_missing_library_fails_when_the_run_requires_every_service(monkeypatch):
    monkeypatch.setenv(REQUIRE_SERVICES, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} cannot be imported"):
        require_module(MISSING)
    with pytest.raises(pytest.fail.Exception, match=rf"Redis is down \({REQUIRE_SERVICES}=1\)"):
        unavailable("Redis is down")


def test_a_present_library_is_the_module():
    assert require_module("json") is __import__("json")


class Item:
    """Stands in for a collected test: its fixtures' names and the markers added."""

    def __init__(self, *fixturenames):
        self.fixturenames = fixturenames
        self.markers = []

    def add_marker(self, marker):
        self.markers.append(marker.name)


def test_the_tests_asking_for_a_server_fixture_are_marked_services():
    items = [Item("tmp_path", "postgres_env"), Item("tmp_path"), Item("redis_server")]
    mark_service_tests(items)  # type: ignore[arg-type]  # stand-ins for pytest items
    assert [item.markers for item in items] == [["services"], [], ["services"]]


def test_this_test_is_not_marked(request):
    assert request.node.get_closest_marker("services") is None
