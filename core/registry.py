"""One small generic registry, instantiated for models, datasets, losses and augmentations.

A registry maps a spec's ``kind`` to the builder that makes it. Names come from the spec's
tagged unions (``core.spec``), so an unknown name is already refused at validation; the
registry's own error is the last line of defence for code that builds outside a spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from core.errors import SpecError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            for name in names:
                if name in self._items:
                    raise ValueError(f"{self.what} {name!r} is registered twice")
                self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise SpecError(f"unknown {self.what} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
