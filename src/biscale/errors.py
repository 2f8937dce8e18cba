"""Every error biscale raises on purpose derives from :class:`BiscaleError`.

* :class:`InputError` means "the user gave us bad input": the CLI turns it into a one-line message on stderr and
  exit code 2, never a traceback. Library code raises it with a message naming the file, row (line) or field.
* :class:`PermissionRequiredError` and :class:`NoGpuError` also exit 2 (the user must change something).
* :class:`NvmlCallError` and :class:`ControlSuspendedError` come from the real-GPU control plane
  (:mod:`biscale.gpu`); they live here so that code catching them need not import NVML.

Each also derives from the built-in class it used to be (``ValueError`` / ``RuntimeError``), so callers that
catch those keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class BiscaleError(Exception):
    """Root of every error biscale raises deliberately (``except BiscaleError`` catches them all)."""


class InputError(BiscaleError, ValueError):
    """Bad user input (file, row, field or option). ``str(err)`` is the one-line reason shown to the user."""

    def __init__(
        self,
        reason: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path if self.line is None else f"{self.path}:{self.line}")
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        prefix = ", ".join(where)
        text = f"{prefix}: {self.reason}" if prefix else self.reason
        return " ".join(text.split())  # always one line


def validation_input_error(err: Any, *, path: str | Path | None = None, missing: str = "missing") -> InputError:
    """The first problem of a pydantic ``ValidationError`` as an :class:`InputError`: the field path (``sim.nodes``),
    what is allowed (pydantic's message) and the value given, when it is a single value."""
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or None
    if first["type"] == "missing":
        return InputError(missing, path=path, field=loc)
    msg = str(first["msg"]).removeprefix("Value error, ")
    given = first.get("input")
    scalar = isinstance(given, str | int | float) and not isinstance(given, bool)
    said = "(got " in msg or (isinstance(given, str) and repr(given) in msg)  # the message quotes it already
    if scalar and len(repr(given)) <= 60 and not said:
        msg = f"{msg} (got {given!r})"
    return InputError(msg, path=path, field=loc)


class PermissionRequiredError(BiscaleError, RuntimeError):
    """An operation needs privileges the process does not have (e.g. setting GPU clocks needs root)."""


class NoGpuError(BiscaleError, RuntimeError):
    """A GPU (or the NVML library) is needed but not present."""


class NvmlCallError(BiscaleError, RuntimeError):
    """An NVML call still failed after the bounded retries."""

    def __init__(self, fn: str, gpu: int, code: int | None, name: str, attempts: int) -> None:
        self.fn, self.gpu, self.code, self.attempts = fn, gpu, code, attempts
        super().__init__(f"{fn} on GPU {gpu} failed {attempts} time(s): {name}")


class ControlSuspendedError(BiscaleError, RuntimeError):
    """Clock control is suspended (NVML kept failing, or the watchdog fired); clocks were restored."""
