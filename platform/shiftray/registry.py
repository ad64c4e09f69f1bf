"""Registries by short name: everything a job spec can name is looked up here.

A `Registry` maps a name to a factory. Unknown names raise a `KeyError` that lists what is
registered, so a typo in a job spec tells the user what they could have written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError, KeyError):
    """A name that is not registered (a ValueError, so spec validation reports it per field)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name -> object table with helpful errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            text = doc if doc is not None else (getattr(obj, "__doc__", None) or "")
            self._docs[name] = text.strip().splitlines()[0] if text.strip() else ""
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self._items)

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._docs[n]) for n in self.names()]


BACKBONES: Registry[Any] = Registry("backbone")
METHODS: Registry[Any] = Registry("method")
DATASETS: Registry[Any] = Registry("dataset")


def load_all() -> None:
    """Import the modules whose import registers components (cheap: no torch model is built)."""
    from shiftray.data import benchmarks, folders, sources, synthetic  # noqa: F401
    from shiftray.methods import cdan, consistency, dann, distill, erm, mcc, self_training, shot  # noqa: F401
    from shiftray.models import backbones  # noqa: F401
