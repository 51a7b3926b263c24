"""What every job and every command shares: its log, one line for bad input or a fault of the
machine (a traceback only for a bug), and the peak memory it used against what it was given.
"""

import atexit
import gc
import logging
import os
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import storage
from .errors import InputError, system_fault

log = logging.getLogger("ngprecomputed")
FORMAT = "%(asctime)s %(levelname)s %(message)s"


class Failed(Exception):
    """Some of a job's datasets failed; each said why in its own log (this says how many)."""


def peak_rss_mib() -> float:
    """This process's peak resident memory, exact (Snakemake's sampled benchmark misses short
    jobs). VmHWM starts afresh at exec; ru_maxrss would include the forking Snakemake's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def say_error(message: str, to_log: bool = True) -> None:
    """An error, once where a person reads it (stderr) and in the log."""
    if to_log:
        log.error("%s", message)
    print(f"ngprecomputed: error: {message}", file=sys.stderr, flush=True)


def exit_without_collection() -> None:
    """Freeze every object at exit: the interpreter's last garbage collection otherwise walks
    every object of Snakemake's, numpy's and nibabel's modules (0.1 s of a job, 0.3-0.5 s of a
    Snakemake run, a dry run too). Registered once however often it is called."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def keep_pandas_out() -> None:
    """Make ``import pandas`` fail fast in this (Snakemake's) process, if nothing loaded it.

    For every ``script:`` job Snakemake imports pandas in its own process to see whether the
    job's params are data frames (``Snakemake._safely_store_params``): 0.25-0.3 s before the
    first job starts, a tenth of a small dataset's run. Our params never are, and nothing of
    ours in this process reads pandas (annotation tables are read in their jobs); Snakemake
    then stores plain params (its metadata checks ``find_spec``: None too). Called once the
    DAG is built (``onstart``, which Snakemake runs for the main Snakefile only: a workflow
    that uses ours as a module is left alone); where pandas is loaded already (the SLURM
    plugin imports it), nothing changes."""
    if "pandas" not in sys.modules:
        sys.modules["pandas"] = None  # type: ignore[assignment]


@contextmanager
def job(
    log_path: str | Path | None = None,
    mem_mb: int | None = None,
    dataset: str | None = None,
    verbose: bool = False,
) -> Iterator[None]:
    """Run the body as a job: logging to ``log_path`` (else stderr); bad input and faults of
    the machine end it with one line and exit status 1; its log ends with its peak memory."""
    exit_without_collection()  # the process ends after its job
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="w") if log_path else logging.StreamHandler()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=FORMAT, handlers=[handler]
    )
    logging.raiseExceptions = False  # a log on a full disk must not print a traceback
    if log_path and os.environ.get("SLURM_JOB_ID"):  # a job's log names its cluster job
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], os.uname().nodename)
    code = 0
    try:
        yield
        storage.flush()  # a bucket's uploads done before the job says it is
    except Failed as e:
        log.warning("%s", e)
        say_error(str(e), to_log=False)
        code = 1
    except InputError as e:
        say_error(str(e), to_log=bool(log_path))
        code = 1
    except OSError as e:
        message = system_fault(e)
        if message is None:
            raise
        say_error(f"dataset {dataset}: {message}" if dataset else message, bool(log_path))
        code = 1
    finally:
        if log_path:  # a workflow job: its log ends with its peak memory, and what it was given
            peak = peak_rss_mib()
            given = f" of {mem_mb} MB given (mem_mb)" if mem_mb else ""
            over = mem_mb and peak * 2**20 > mem_mb * 1e6
            log.log(
                logging.WARNING if over else logging.INFO, "peak memory %.0f MiB%s", peak, given
            )
            workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            if workers:  # forked workers (ngprecomputed.engine): each its own peak
                log.info("worker processes: peak memory up to %.0f MiB each", workers)
    if code:
        raise SystemExit(code)
