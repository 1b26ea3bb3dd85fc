"""`dualmethod`: one name that works on the class and on an instance, as E2B's SDK has it.

`Sandbox.kill("i123")` kills a sandbox by id; `sbx.kill()` kills `sbx`. Both are the same operation, so the
instance variant is usually one line that calls the class variant with its own id.

The instance variant is registered under a name of its own (`@kill.instance` on `_kill_on_instance`), so no
name in the class is defined twice and a type checker sees each variant's own signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])


class dualmethod:  # noqa: N801 — used like `classmethod`
    def __init__(self, on_class: Callable[..., Any]) -> None:
        self._on_class = on_class
        self._on_instance: Callable[..., Any] | None = None
        self.__doc__ = on_class.__doc__
        self.__name__ = on_class.__name__

    def instance(self, on_instance: _F) -> _F:
        """Register the variant used when the method is reached through an instance; it is returned as is."""
        self._on_instance = on_instance
        return on_instance

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., Any]:
        if obj is None or self._on_instance is None:
            return self._on_class.__get__(owner, type(owner))
        return self._on_instance.__get__(obj, owner)
