"""The one error tree of dtqs: every error a user can cause or see has a code.

The CLI maps codes to exit statuses and the API maps them to HTTP statuses, each in
one table; nothing else decides how an error is surfaced.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Error codes. Each one is a kind of failure a caller can act on.
INVALID = "invalid"
NOT_FOUND = "not_found"
ALREADY_EXISTS = "already_exists"
CONFLICT = "conflict"
UNAVAILABLE = "unavailable"
INTERNAL = "internal"
TIMEOUT = "timeout"
TASK_FAILED = "task_failed"

#: Exit statuses of the CLI, by error code (2 = the user's input was wrong).
EXIT_OK = 0
EXIT_STATUS = {
    INVALID: 2,
    NOT_FOUND: 3,
    ALREADY_EXISTS: 4,
    CONFLICT: 4,
    TASK_FAILED: 5,  # `--wait` saw the task end failed, dead or cancelled
    UNAVAILABLE: 69,  # EX_UNAVAILABLE from sysexits.h
    INTERNAL: 70,  # EX_SOFTWARE
    TIMEOUT: 124,  # as timeout(1)
}


class DtqsError(Exception):
    """Base of every error dtqs raises on purpose; carries a machine-readable code."""

    code: str = INTERNAL

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.code, 1)


@dataclass(frozen=True)
class Problem:
    """One finding in the user's project: where it is and what was expected."""

    file: str
    line: int | None
    path: str
    message: str
    warning: bool = False  #: worth knowing, but nothing to refuse the files for

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        message = f"warning: {self.message}" if self.warning else self.message
        return f"{where}: {self.path}: {message}" if self.path else f"{where}: {message}"


class ManifestError(DtqsError):
    """The manifest (or a file it names) is invalid; holds every problem found."""

    code = INVALID

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid manifest")


class HandlerImportError(DtqsError):
    """A handler file could not be imported or does not define the named function."""

    code = INVALID

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


@dataclass(frozen=True)
class Violation:
    """One JSON Schema violation: a JSON pointer into the submitted document and why."""

    pointer: str
    message: str


class PayloadValidationError(DtqsError):
    """A payload does not match its function's JSON Schema or is not JSON at all."""

    code = INVALID

    def __init__(self, message: str, violations: list[Violation] | None = None) -> None:
        self.violations = list(violations or [])
        super().__init__(message)


class UnknownFunctionError(DtqsError):
    """A submission names a function the manifest does not declare."""

    code = NOT_FOUND


class QueueNotFoundError(DtqsError):
    """A queue name is not declared in the manifest."""

    code = NOT_FOUND


class TaskNotFoundError(DtqsError):
    """No task with that id exists (never did, or its record expired)."""

    code = NOT_FOUND


class TaskStateError(DtqsError):
    """The task is in a state that does not allow the operation (e.g. cancel a running task)."""

    code = CONFLICT


class BrokerUnavailableError(DtqsError):
    """Redis could not be reached, did not answer in time, or cannot take writes now.

    ``outage``: Redis itself is away or unusable (False: this call alone failed, e.g.
    a submission that reached Redis after its deadline, or every pooled connection busy).
    """

    code = UNAVAILABLE

    def __init__(self, message: str, *, outage: bool = True) -> None:
        super().__init__(message)
        self.outage = outage


class SettingsError(DtqsError):
    """A process setting (environment variable or flag) is invalid."""

    code = INVALID


class TaskFailedError(DtqsError):
    """A waited-for task ended without success: failed, dead or cancelled."""

    code = TASK_FAILED


class WaitTimeoutError(DtqsError):
    """A wait for a task's outcome ran out of time; the task goes on."""

    code = TIMEOUT
