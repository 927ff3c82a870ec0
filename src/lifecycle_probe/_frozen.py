"""Small immutable records without ``typing``/``collections``/``dataclasses``.

Records are built on every invocation and on the INIT path, where importing
``dataclasses`` (~30 ms here) or ``typing`` (~15 ms) would cost more than the whole probe.
A record is a tuple subclass whose fields are read through C-level ``itemgetter``
properties: immutable, hashable, comparable and as cheap to build as a tuple.
"""

from __future__ import annotations

# The C module itself: operator.py would add its own import for nothing.
from _operator import itemgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def field(index: int) -> Any:
    """A read-only attribute reading item ``index`` of the record."""
    return property(itemgetter(index))


class Record(tuple[object, ...]):
    """Base of the immutable records: subclasses set ``_fields`` and declare ``field``s."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
        )
        return f"{type(self).__name__}({inner})"

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (nested records stay records)."""
        return dict(zip(self._fields, self, strict=True))

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed."""
        values = self.as_dict()
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        values.update(changes)
        return tuple.__new__(type(self), [values[name] for name in self._fields])
