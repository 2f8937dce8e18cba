"""One registry helper for everything selected by name: routers, controllers, planners, cost models, forecasters,
profilers.

A :class:`Registry` maps a string key to an entry (usually a factory) with one help line. The CLI and the
configuration files resolve names through it, so an unknown name is always the same one-line
:class:`~biscale.errors.InputError` naming the field and listing the choices. New policies register where they
are defined::

    @CONTROLLERS.register("mpc", "model predictive control of the prefill clock")
    class MpcController(ClockController): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from biscale.errors import InputError

T = TypeVar("T")
E = TypeVar("E")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` appears in errors, ``field`` names the CLI/config field)."""

    def __init__(self, kind: str, field: str) -> None:
        self.kind = kind
        self.field = field
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[E], E]:
        """Decorator (or ``register(name, help)(entry)``) adding ``entry`` under ``name``.

        ``help`` defaults to the first line of the entry's docstring; one of the two must say what it is.
        Registering a name twice is a programming error (``ValueError``).
        """
        key = name.strip()
        if not key or key != name or any(c.isspace() for c in key):
            raise ValueError(f"{self.kind} name must be a non-empty word, got {name!r}")

        def add(entry: E) -> E:
            if key in self._entries:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            line = help if help is not None else _first_line(getattr(entry, "__doc__", None))
            if not line.strip():
                raise ValueError(f"{self.kind} '{key}' needs a help line")
            self._entries[key] = entry  # type: ignore[assignment]  # E is the caller's view of T
            self._help[key] = line.strip()
            return entry

        return add

    def register_lazy(self, name: str, help: str, target: str) -> None:
        """Register ``target`` (``"package.module:attribute"``) under ``name`` without importing it now.

        For entries defined in a package that itself depends on the registry's package (tier-1 planners live in
        :mod:`biscale.plan`, which runs the simulator): the seam names them, the module is imported on first
        :meth:`get`. A plugin reference, not an import, so the package layering stays acyclic.
        """
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"lazy {self.kind} target must be 'module:attribute', got {target!r}")
        self.register(name, help)(_Lazy(module, attr))

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is an :class:`InputError` listing the choices."""
        entry = self._entries.get(name)
        if entry is None:
            raise InputError(self.unknown_reason(name), field=self.field)
        if isinstance(entry, _Lazy):
            entry = self._entries[name] = entry.resolve()
        return entry

    def unknown_reason(self, name: str) -> str:
        """The one-line reason an unknown ``name`` is refused (for validators that raise their own error)."""
        choices = ", ".join(self.names()) or "none registered"
        return f"unknown {self.kind} '{name}' (choices: {choices})"

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def help(self, name: str) -> str:
        """The entry's one-line description."""
        self.get(name)
        return self._help[name]

    def names(self) -> tuple[str, ...]:
        """Registered names, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self.names())})"


class _Lazy:
    """A registry entry named by ``module:attribute``, imported on first lookup."""

    __slots__ = ("attr", "module")

    def __init__(self, module: str, attr: str) -> None:
        self.module = module
        self.attr = attr

    def resolve(self) -> Any:
        return getattr(importlib.import_module(self.module), self.attr)


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""
