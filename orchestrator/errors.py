"""The errors the CLI turns into exit codes: bad input (exit 2, nothing launched) and a backend that cannot do its
job (exit 1, with the backend's own message). Their own module, so backends raise them without importing the
sweep-file parser."""

from __future__ import annotations


class SpecError(Exception):
    """A sweep-file problem, printed as one line naming the file, the line, the key and what is allowed."""

    def __init__(self, file: str, key: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.file, self.key, self.message, self.line = file, key, message, line

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class BackendError(RuntimeError):
    """A backend cannot do what was asked (the cluster does not answer, a submission failed): one line saying what
    failed and what was done already, so that nothing is lost or submitted twice by a relaunch."""
