"""vmkit's exceptions. Each carries the CLI exit code (README: 0 ok, 1 failed, 2 bad input)."""

from __future__ import annotations


class VmkitError(Exception):
    """An operation failed (exit code 1). The message says what to do."""

    exit_code = 1


class InvalidInput(VmkitError):
    """Bad usage or bad input: invalid spec, unknown VM, busy name (exit code 2)."""

    exit_code = 2


class SpecError(InvalidInput):
    """A MachineSpec field is invalid; `problems` lists (field, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"{field}: {msg}" if field else msg for field, msg in problems]
        super().__init__("invalid machine spec:\n  " + "\n  ".join(lines))


class NotFound(InvalidInput):
    pass


class NameInUse(InvalidInput):
    pass


class BrokenRecord(VmkitError, ValueError):
    """A VM's machine.json cannot be read or is not a record (shown as `broken`).

    Also a ValueError, so code that skips unreadable records keeps skipping this one."""


class NotSupported(VmkitError):
    """The driver cannot do this; said before touching the VM."""


class VMStateError(VmkitError):
    """The VM is in the wrong state for this operation (e.g. rm of a running VM)."""


class ReadinessTimeout(VmkitError):
    pass


class VMFailed(VmkitError):
    pass


def from_os_error(exc: OSError) -> VmkitError:
    """A clean error for an OSError no command turned into one: bad input (exit 2) when the
    path itself is the problem, else a failure (exit 1)."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    bad_path = (errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP)
    err = InvalidInput if exc.errno in bad_path else VmkitError
    return err(f"{where}{exc.strerror or exc}")
