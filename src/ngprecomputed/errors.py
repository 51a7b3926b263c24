"""The one error type for "the user's input is wrong".

It is caught once, at the command line and in the Snakefile, and printed as one line, as are
the machine's own faults (``system_fault``); any other exception is a bug and keeps its
traceback.
"""

import errno
from contextlib import contextmanager


class InputError(Exception):
    """Bad input from the user: a sample-sheet row, a file, a setting."""


@contextmanager
def naming(dataset: str):
    """Prefix input errors raised inside with the dataset they concern."""
    try:
        yield
    except InputError as e:
        if str(e).startswith(f"dataset {dataset}:"):
            raise
        raise InputError(f"dataset {dataset}: {e}") from None


# What the system says, and what to do about it: faults outside the program, reported in one
# line like bad input (the rerun after the cause is fixed writes the same bytes).
_SYSTEM_FAULTS = {
    errno.ENOSPC: "no space left on device: free some (or give results a bigger disk) and rerun",
    errno.EDQUOT: "disk quota exceeded: free some and rerun",
    errno.EACCES: "permission denied: make it writable, or choose another results folder",
    errno.EPERM: "operation not permitted: make it writable, or choose another results folder",
    errno.EROFS: "read-only file system: choose another results folder",
}


def system_fault(e: OSError) -> str | None:
    """One line for a fault of the machine (full disk, no permission, read-only), else None."""
    what = _SYSTEM_FAULTS.get(e.errno)
    if what is None:
        return None
    return f"{e.filename}: {what}" if e.filename else what
