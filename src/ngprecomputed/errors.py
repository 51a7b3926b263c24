"""The one error type for "the user's input is wrong".

It is caught once, at the command line and in the Snakefile, and printed as one line; any other
exception is a bug and keeps its traceback.
"""

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
