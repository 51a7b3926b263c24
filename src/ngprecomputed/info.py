"""A precomputed folder's ``info``: read with one line when it is missing or not JSON, and
written atomically and last (its presence means the dataset is complete)."""

import json
from pathlib import Path

from .errors import InputError
from .store import write_atomic


def read_info(folder: Path) -> dict:
    """The ``info`` of a dataset (or of its ``mesh/`` or ``names/`` folder)."""
    path = Path(folder) / "info"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{folder}: not a precomputed dataset (no readable info: {e})") from None


def write_info(folder: Path, info: dict) -> Path:
    """``info``, last: readers and the workflow take the folder as complete from then on."""
    path = Path(folder) / "info"
    write_atomic(path, json.dumps(info, indent=1).encode())
    return path
