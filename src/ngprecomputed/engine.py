"""Whole datasets converted in one process: their slabs, or several small datasets, run in a
pool of forked workers.

A job per slab costs a Python start-up, an import of the package and a plan per slab, and
Snakemake's own bookkeeping per job: on one machine that was most of a conversion's time (the
x4 MNI T1: 7 jobs in 6-9 s where one process with two workers takes 2 s). So a dataset is one
job that holds ``workers`` slabs at a time (its memory: workers x slab), and a sheet of small
datasets is a few jobs of many datasets each. Only a volume too big for one machine fans out
over jobs of one slab each (``pyramid``/``finalize`` rules). The chunks are the same bytes
whichever way: every chunk of a scale is made from the same voxels of the scale above.

Workers are forked, not spawned: they start in microseconds with the package already imported
and the plan in memory.
"""

import json
import logging
import multiprocessing
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import crash
from .batches import pooled_plan
from .errors import InputError, naming, system_fault
from .info import write_info
from .job import FORMAT, Failed, say_error
from .plan import NAMES_DIR, Plan
from .pyramid import build_slab
from .settings import source_options
from .sources import open_source
from .store import write_atomic, write_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    """One dataset to convert: its plan, where it goes, and what comes with it."""

    plan: Plan
    root: Path  # the dataset's folder (its info is written last)
    scratch: Path  # the dataset's work folder: raw copies (lossy encodings), decompressed source
    labels: str | None = None  # a label table: segment names and colours
    qc: Path | None = None  # the QC page to write once the dataset is complete
    log: Path | None = None  # the dataset's own log (a job of several datasets)
    source: object = None  # the source already opened by this process (read again, not reopened)


def finish(plan: Plan, root: Path, labels: str | None = None) -> None:
    """Segment names, ``transform.json`` and, last, ``info``: the dataset exists from then."""
    root.mkdir(parents=True, exist_ok=True)
    if labels:
        from .labels import read_label_table, write_segment_properties
        from .viewer import write_segment_colors

        with naming(plan.dataset):
            table = read_label_table(labels)
            write_segment_properties(root / NAMES_DIR, table)
            write_segment_colors(root / NAMES_DIR, table.colors)  # the viewer's segmentColors
    write_atomic(root / "transform.json", json.dumps(plan.transform).encode())
    crash.point("finalize")
    write_info(root, plan.info())
    log.info("%s: wrote %s", plan.dataset, root / "info")


def finalize(plan: Plan, root: Path, labels=None, gzip_index=None, scratch=None) -> None:
    """A fanned-out dataset's last job: its last stage when that is one slab (it runs after
    every other job), then ``finish``."""
    last = len(plan.stages) - 1
    if plan.stages[last].count == 1:
        with naming(plan.dataset):
            build_slab(plan, root, last, 0, gzip_index=gzip_index, scratch=scratch)
    finish(plan, root, labels)


def _pool(workers: int):
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def _streamed(work: Work) -> bool:
    """Is stage 0 read from a .gz source decompressed by this job, while its slabs already run?"""
    return work.plan.gzip_source and work.plan.stages[0].count > 1


# Bands of a ring decompressed at once; each slot is reused once every slab of its band has read
# its box. Inflating a band (ISA-L: 555 MB in 0.15 s here) is much faster than converting its
# slabs, so two slots keep the workers busy.
RING_SLOTS = 2
_RELEASED: list = []  # per slot: a semaphore a slab releases once read (inherited by the fork)


@dataclass(frozen=True)
class Band:
    """The z planes that some of stage 0's slabs read: bytes ``start..end`` of the file."""

    start: int
    end: int
    slabs: tuple[int, ...]


def bands(plan: Plan, source) -> list[Band] | None:
    """Stage 0's slabs grouped by the z planes they read, in file order (None: the file's
    voxels are not plain planes one after another, see ``VolumeSource.planes``)."""
    layout = source.planes()
    if layout is None:
        return None
    offset, plane = layout
    by_z: dict[tuple[int, int], list[int]] = {}
    for i in range(plan.stages[0].count):
        by_z.setdefault(plan.input_box(0, i)[2], []).append(i)
    return [
        Band(offset + z0 * plane, offset + z1 * plane, tuple(slabs))
        for (z0, z1), slabs in sorted(by_z.items())
    ]


def _stage0_in_bands(work: Work, workers: int, ring: Path) -> bool:
    """Stage 0 of a .gz source, its file inflated once (ISA-L), band after band, into the slots
    of a small ring file that the workers read their slabs from while the next band is
    inflated. Its pages are reused: in a VM, a new page of file data cost ~10x rewriting one
    (measured: 1.3 s for the 555 MB x4 T1 written whole, 0.1 s rewritten), and the disk holds
    two bands instead of the whole decompressed volume. False: the file's voxels are not
    planes one after another; it is then only decompressed into ``ring``, whole."""
    from .sources.volume import GzipStream, VolumeSource, decompress, decompressing

    plan = work.plan
    source = work.source
    if not isinstance(source, VolumeSource):
        source = VolumeSource(Path(plan.source))
    cut = bands(plan, source)
    ring.parent.mkdir(parents=True, exist_ok=True)
    if cut is None:
        with naming(plan.dataset):
            decompress(Path(plan.source), ring)
        return False
    data = source.data_path  # the header already named it (a .BRIK.gz beside its .HEAD)
    size = max(b.end - b.start for b in cut)  # every band's but the last
    # a ring no smaller than the file (a few deep bands: cube slabs) is the file, unwrapped
    slots = RING_SLOTS if RING_SLOTS * size < cut[-1].end - cut[0].start else len(cut)
    context = multiprocessing.get_context("fork")
    _RELEASED[:] = [context.Semaphore(0) for _ in range(slots)]
    waiting = [0] * slots  # slabs of the band in each slot that have not read it yet
    futures = []
    try:
        with (
            naming(plan.dataset),
            decompressing(data),
            GzipStream(data) as stream,
            open(ring, "wb") as out,
            _pool(min(workers, plan.stages[0].count)) as pool,
        ):
            short = InputError(f"{data}: ends before the voxels its header describes")
            head = bytes(stream.read(cut[0].start))
            if len(head) < cut[0].start:
                raise short
            try:
                for b, band in enumerate(cut):
                    slot, n = b % slots, band.end - band.start
                    for _ in range(waiting[slot]):
                        _wait(_RELEASED[slot], futures)
                    stream.seek(band.start)
                    if stream.copy_to(out.fileno(), slot * size, n) < n:
                        raise short
                    window = (head, ring, band.start, n, slot * size)
                    for i in band.slabs:
                        args = (plan, work.root, i, work.scratch, window, slot)
                        futures.append(pool.submit(_band_slab, *args))
                    waiting[slot] = len(band.slabs)
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # slabs not started yet are not run
                raise
    finally:
        _RELEASED.clear()
    return True


def _wait(released, futures) -> None:
    """One release of ``released``; a worker's failure (or death) is raised meanwhile."""
    while not released.acquire(timeout=0.2):
        for future in futures:
            if future.done():
                future.result()


def _band_slab(plan: Plan, root: Path, slab: int, scratch: Path, window: tuple, slot: int):
    """A slab of stage 0 read from its band of the ring (in a forked worker); its slot is
    released once the slab holds its box (a failed slab is seen by ``_wait`` instead)."""
    from .sources.volume import VolumeSource, Window

    with naming(plan.dataset), Window(*window) as band:
        source = VolumeSource(Path(plan.source), window=band)
        build_slab(
            plan, root, 0, slab, scratch=scratch, opened=source, after_read=_RELEASED[slot].release
        )


def _slab(plan: Plan, root: Path, stage: int, slab: int, scratch: Path, source, **kw):
    with naming(plan.dataset):
        build_slab(plan, root, stage, slab, scratch=scratch, decompressed=source, **kw)


def convert(work: Work, workers: int = 1) -> None:
    """One dataset, stage after stage, ``workers`` slabs of a stage at a time; then its
    ``info`` and its QC page."""
    plan = work.plan
    ring = work.scratch / "source.bands" if _streamed(work) else None
    source = None  # the source decompressed whole (not in bands)
    # the scales a slab makes whole stay in memory for the QC page (lossless chunks only)
    held = {} if work.qc is not None and not plan.raw_copies else None
    try:
        for s, stage in enumerate(plan.stages):
            if s == 0 and ring is not None:
                if _stage0_in_bands(work, max(workers, 1), ring):
                    continue
                source = ring
            args = [(plan, work.root, s, i, work.scratch, source) for i in range(stage.count)]
            if workers < 2 or stage.count < 2:
                opened = work.source if s == 0 and ring is None else None
                for a in args:
                    _slab(*a, held=held, opened=opened)
                continue
            with _pool(min(workers, stage.count)) as pool:
                for future in [pool.submit(_slab, *a) for a in args]:
                    future.result()
    except BrokenProcessPool:
        raise InputError(
            f"dataset {plan.dataset}: a worker process was killed (out of memory? each holds "
            "a slab of voxels_per_job voxels)"
        ) from None
    finally:
        if ring is not None:
            ring.unlink(missing_ok=True)
    finish(plan, work.root, work.labels)
    if work.qc is not None:
        from .report import write_qc

        work.qc.parent.mkdir(parents=True, exist_ok=True)
        write_qc(work.root, work.qc, held=held)


def convert_file(spec, out: Path, options, processes: int = 1) -> None:
    """One volume (or slice stack) to the dataset ``out`` (named for its folder) in this
    process, its slabs over ``processes`` workers: the same package functions and the same
    bytes as the workflow, without a sheet (``ngprecomputed convert``)."""
    out = Path(out)
    name = out.name
    with naming(name):
        source = open_source(spec, **source_options(options))
        plan, workers = pooled_plan(name, source, options, processes)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out.parent) as scratch:
        convert(Work(plan, out, Path(scratch), labels=options.labels, source=source), workers)
    log.info("%s: %d scales, %d slabs, %d workers", out, len(plan.scales), plan.jobs, workers)


@contextmanager
def dataset_log(path: Path | None) -> Iterator[None]:
    """Log lines to the dataset's own log file instead of the job's, while inside (its
    errors are then named by their dataset in the end-of-run summary)."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    saved, root.handlers = root.handlers, [handler]
    try:
        yield
    finally:
        root.handlers = saved
        handler.close()


def _convert_logged(work: Work, workers: int = 1) -> str | None:
    """Convert one dataset; its failure (bad input, a full disk) said in one line and
    returned, else None."""
    with dataset_log(work.log):
        try:
            convert(work, workers)
            return None
        except InputError as e:
            message = str(e)
        except OSError as e:
            fault = system_fault(e)
            if fault is None:
                raise
            message = f"dataset {work.plan.dataset}: {fault}"
        say_error(message)
        return message


def convert_all(
    works: list[Work], workers: int = 1, manifest: Path | None = None, qc: Path | None = None
) -> None:
    """Several datasets: one with its slabs in the pool, or many small ones side by side (one
    worker each), then the job's ``manifest``, last. A dataset that fails does not stop the
    others; it says why in its own log, and the job fails after them (``Failed``)."""
    if qc is not None:
        qc.mkdir(parents=True, exist_ok=True)  # the job's QC folder, empty without QC
    if len(works) == 1 or workers < 2:
        failed = [_convert_logged(w, workers) for w in works]
    else:
        try:
            with _pool(min(workers, len(works))) as pool:
                failed = list(pool.map(_convert_logged, works))
        except BrokenProcessPool:
            raise Failed("a worker process was killed (out of memory?)") from None
    failed = [f for f in failed if f]
    if failed:
        raise Failed(
            f"{len(failed)} of this job's {len(works)} datasets failed (each said why, in its log)"
        )
    if manifest is not None:
        write_manifest(manifest, {"datasets": [w.plan.dataset for w in works]})
