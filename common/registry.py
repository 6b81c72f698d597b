"""Small name -> object registries, filled with a decorator.

One registry per kind (models, datasets, pruning scorers). A lookup of an
unknown name raises `UnknownNameError`, whose message names the closest valid
name and lists them all, so every CLI can print it as its one-line error.

`check_known` checks a name against a kind's built-in names without importing
the module that fills the registry (torch), so a typo is reported at once; a
registry that is filled (a plugin registered into it) is consulted too.
"""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterable, Iterator, List, Optional, TypeVar

from common.checks import did_you_mean

T = TypeVar("T")

# Kinds a researcher extends with --plugins: their unknown-name errors say how.
PLUGIN_KINDS = ("algorithm", "scorer", "model", "dataset")


class UnknownNameError(ValueError):
    """An unknown registry name; the message names it, the closest valid one, and lists them all."""


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    valid = sorted(set(valid))
    text = f"unknown {kind} {name!r}{did_you_mean(name, valid)}; valid {kind}s: {', '.join(valid)}"
    if kind in PLUGIN_KINDS:
        text += f"; your own {kind} is loaded with --plugins MODULE"
    return text


class Registry(Generic[T]):
    _by_kind: Dict[str, "Registry"] = {}

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        Registry._by_kind[kind] = self

    @classmethod
    def of_kind(cls, kind: str) -> Optional["Registry"]:
        """The registry of `kind` if its module has been imported (None otherwise)."""
        return cls._by_kind.get(kind)

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names())) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> List[str]:
        return sorted(self._entries)

    def check(self, name: str) -> str:
        """Return `name` if registered, else raise the listing error."""
        self[name]
        return name


def check_known(kind: str, name: str, builtin: Iterable[str]) -> str:
    """`name` if it is a built-in of `kind` or registered (by a plugin) in its registry; UnknownNameError if not.

    Never imports the registry's module, so the sweep checks its arguments before torch loads.
    """
    builtin = tuple(builtin)
    if name in builtin:
        return name
    registry = Registry.of_kind(kind)
    if registry is not None and name in registry:
        return name
    raise UnknownNameError(unknown_name_message(kind, name, builtin + tuple(registry.names() if registry else ())))
