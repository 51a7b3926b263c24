"""The one error type for "the user's input is wrong".

It is caught once, at the command line and in the Snakefile, and printed as one line; any other
exception is a bug and keeps its traceback.
"""


class InputError(Exception):
    """Bad input from the user: a sample-sheet row, a file, a setting."""
