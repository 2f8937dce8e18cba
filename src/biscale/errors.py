"""Errors that mean "the user gave us bad input".

The CLI turns every :class:`InputError` into a one-line message on stderr and exit code 2, never a
traceback. Library code raises it with a message that names the file, row (line) or field at fault.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
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


class PermissionRequiredError(RuntimeError):
    """An operation needs privileges the process does not have (e.g. setting GPU clocks needs root)."""


class NoGpuError(RuntimeError):
    """A GPU (or the NVML library) is needed but not present."""
