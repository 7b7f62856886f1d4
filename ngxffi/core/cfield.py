"""Python attributes that read and write a field of a proxy's C struct."""

from __future__ import annotations

from operator import attrgetter
from typing import Any


def cfield(struct: str, name: str) -> Any:
    """A property for ``self.raw.<name>``: the value lives in C memory, not in Python.

    Reading goes through ``operator.attrgetter``, which runs in C; handlers on hot paths
    may use ``proxy.raw.<name>`` directly and save the property call.
    """

    def set_field(self: Any, value: int) -> None:
        setattr(self.raw, name, value)

    return property(attrgetter(f"raw.{name}"), set_field, doc=f"{struct}.{name} (C)")
