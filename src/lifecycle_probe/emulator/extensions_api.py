"""The Extensions API of an environment: ``register``, ``event/next``, ``init|exit/error``,
and the Telemetry API subscription a registered extension makes.

Extensions register during INIT for ``INVOKE`` and ``SHUTDOWN``; an extension parked in
``event/next`` counts towards the environment being settled (and so frozen), and its
events are queued by :mod:`.lifecycle` (``SHUTDOWN``) and :mod:`.delivery` (``INVOKE``).
What a telemetry subscriber is sent, and when, is :mod:`.telemetry_api`'s.
"""

from __future__ import annotations

import json
import uuid

from lifecycle_probe.emulator import platform_events
from lifecycle_probe.emulator.launch import FUNCTION_VERSION
from lifecycle_probe.emulator.lifecycle import DEAD, INIT, EnvironmentLifecycle, Extension
from lifecycle_probe.emulator.runtime_api import ACCEPTED, Reply
from lifecycle_probe.emulator.telemetry_api import parse_subscription

__all__ = ["ExtensionsApi"]

ALLOWED_EXTENSION_EVENTS = frozenset({"INVOKE", "SHUTDOWN"})


def _unknown(extension_id: str | None) -> Reply:
    return Reply.error(
        403, "Extension.UnknownExtensionIdentifier", f"unknown extension id {extension_id!r}"
    )


class ExtensionsApi(EnvironmentLifecycle):
    """The extensions' side of an environment (part of the ``RuntimeApiBackend``)."""

    def extension_register(self, name: str | None, body: bytes) -> Reply:
        """``extension/register``: only during INIT, as on Lambda."""
        if not name:
            return Reply.error(400, "InvalidRequest", "Lambda-Extension-Name header missing")
        try:
            request = json.loads(body) if body else {}
            events = frozenset(request.get("events", []))
        except (ValueError, AttributeError, TypeError):
            return Reply.error(400, "InvalidRequest", 'body must be {"events": [...]}')
        unknown = events - ALLOWED_EXTENSION_EVENTS
        if unknown:
            return Reply.error(400, "InvalidEventType", f"unknown events: {sorted(unknown)}")
        with self._cond:
            if self.state != INIT:
                return Reply.error(
                    403,
                    "Extension.RegistrationClosed",
                    f"extensions register during INIT (state: {self.state})",
                )
            extension = Extension(id=str(uuid.uuid4()), name=name, events=events)
            self._extensions.append(extension)
        return Reply.json(
            200,
            {
                "functionName": self.function.function_name,
                "functionVersion": FUNCTION_VERSION,
                "handler": self.function.handler,
            },
            {"Lambda-Extension-Identifier": extension.id},
        )

    def _extension(self, extension_id: str | None) -> Extension | None:
        return next((ext for ext in self._extensions if ext.id == extension_id), None)

    def extension_next(self, extension_id: str | None) -> Reply:
        """``extension/event/next``: settle (maybe freeze), then wait for an event."""
        with self._cond:
            extension = self._extension(extension_id)
            if extension is None:
                return _unknown(extension_id)
            extension.parked = True
            self._settle_locked()
            self._wait_locked(lambda: self.state == DEAD or bool(extension.queue), None)
            extension.parked = False
            if not extension.queue:
                return self._gone()
            event = extension.queue.popleft()
            return Reply.json(200, event, {"Lambda-Extension-Event-Identifier": str(uuid.uuid4())})

    def extension_error(
        self, extension_id: str | None, phase: str, error_type: str | None, body: bytes
    ) -> Reply:
        """``extension/init/error`` fails INIT; ``extension/exit/error`` is only recorded."""
        with self._cond:
            extension = self._extension(extension_id)
            if extension is None:
                return _unknown(extension_id)
            if phase == "init" and self.state == INIT:
                self._record_init_error_locked(error_type, body, "init-error")
            else:
                self._log(f"EXTENSION {extension.name} {phase}/error {error_type or ''}".rstrip())
            return ACCEPTED

    def telemetry_subscribe(self, extension_id: str | None, body: bytes) -> Reply:
        """``PUT /2022-07-01/telemetry``: a registered extension subscribes."""
        with self._cond:
            extension = self._extension(extension_id)
            if extension is None:
                return _unknown(extension_id)
            subscription = parse_subscription(body)
            if isinstance(subscription, Reply):
                return subscription
            self._telemetry.subscribe(extension.name, subscription)
            self._telemetry.publish(
                platform_events.TELEMETRY_SUBSCRIPTION,
                platform_events.telemetry_subscription(extension.name, subscription.types),
            )
        return Reply(200, b"OK", content_type="text/plain")
