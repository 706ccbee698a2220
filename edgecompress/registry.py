"""The one registry mechanism: name -> function. A miss lists the valid names and suggests the
closest; registering a name twice is an error."""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterator, TypeVar

from .errors import InputError

F = TypeVar("F", bound=Callable)


def closest(name: str, choices) -> str:
    """' Did you mean X?' or '' when nothing is close."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


class Registry(Generic[F]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: Dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def add(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = fn
            return fn

        return add

    def get(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise InputError(
                f"unknown {self.kind} '{name}'.{closest(name, self._items)}",
                hint=f"valid {self.kind} names: {', '.join(sorted(self._items))}",
            ) from None

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
