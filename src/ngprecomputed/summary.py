"""The end-of-run summary: which datasets failed, and why, in one line each."""

from pathlib import Path


def failures(logs: Path, since: float) -> list[str]:
    """``dataset: message`` for every job log written since ``since`` that ends in an error."""
    out = []
    for log in sorted(Path(logs).glob("*/*.log")):
        if log.stat().st_mtime < since:
            continue
        errors = [line for line in log.read_text().splitlines() if " ERROR " in line]
        if errors:
            out.append(f"{log.parent.name}: {errors[-1].split(' ERROR ', 1)[1]}  (log: {log})")
    return out
