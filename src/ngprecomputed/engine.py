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

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor
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
from .sources import is_slice_stack, open_source
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


def _fork():
    """The processes' context (imported here: a job of one worker never starts a process)."""
    import multiprocessing

    return multiprocessing.get_context("fork")


def _pool(workers: int):
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=_fork())


def _banded(work: Work, source) -> bool:
    """Is stage 0 read through a ring of bands made once by this job while its slabs run: a
    .gz source inflated, or a stack of PNG/JPEG sections decoded, that several slabs read?"""
    plan = work.plan
    if plan.stages[0].count < 2:
        return False
    if plan.gzip_source:
        return True
    from .sources.slices import SliceSource

    if not isinstance(source, SliceSource) or not source.decodes_whole:
        return False  # a TIFF section is read by strips or tiles: each slab reads its own
    return any(len(band.slabs) > 1 for band in section_bands(plan, source))


# Bands of a ring made at once; each slot is reused once every slab of its band has read its
# box. Inflating a band (ISA-L: 555 MB in 0.15 s here) is much faster than converting its
# slabs, so two slots keep the workers busy.
RING_SLOTS = 2
_RELEASED: list = []  # per slot: a semaphore a slab releases once read (inherited by the fork)


@dataclass(frozen=True)
class Band:
    """What some of stage 0's slabs read: bytes ``start..end`` of the file (a .gz source's
    z planes), or of the stack's sections decoded one after another (``section_bands``)."""

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
    return [
        Band(offset + z0 * plane, offset + z1 * plane, slabs)
        for (z0, z1), slabs in _slabs_by_range(plan, 2)
    ]


def section_bands(plan: Plan, source) -> list[Band]:
    """Stage 0's slabs grouped by the sections they read (a PNG or JPEG is decoded whole for
    any box of it: the slabs side by side of a band share one decoding), in stack order."""
    axis, flipped = source.slice_axis()
    n, per = source.shape[axis], source.section_bytes * len(source.files)
    cut = []
    for (a, b), slabs in _slabs_by_range(plan, axis):
        first, last = (n - b, n - a) if flipped else (a, b)
        cut.append(Band(first * per, last * per, slabs))
    return sorted(cut, key=lambda band: band.start)


def _slabs_by_range(plan: Plan, axis: int) -> list[tuple[tuple[int, int], tuple[int, ...]]]:
    """Stage 0's slabs by the range of ``axis`` they read, in order."""
    by_range: dict[tuple[int, int], list[int]] = {}
    for i in range(plan.stages[0].count):
        by_range.setdefault(tuple(plan.input_box(0, i)[axis]), []).append(i)
    return [(r, tuple(slabs)) for r, slabs in sorted(by_range.items())]


def _stage0_in_bands(work: Work, workers: int, ring: Path, source) -> bool:
    """Stage 0 read through a ring (``_banded``); False: a .gz file whose voxels are not
    planes one after another, only decompressed into ``ring``, whole."""
    from .sources.slices import SliceSource

    ring.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, SliceSource):
        _sections_in_bands(work, workers, ring, source)
        return True
    return _gz_in_bands(work, workers, ring, source)


def _gz_in_bands(work: Work, workers: int, ring: Path, source) -> bool:
    """A .gz source's file inflated once (ISA-L), band after band, into the slots of a small
    ring file that the workers read their slabs from while the next band is inflated. Its
    pages are reused: in a VM, a new page of file data cost ~10x rewriting one (measured: 1.3 s
    for the 555 MB x4 T1 written whole, 0.1 s rewritten), and the disk holds two bands instead
    of the whole decompressed volume."""
    from .sources.volume import GzipStream, VolumeSource, decompress, decompressing

    plan = work.plan
    if not isinstance(source, VolumeSource):
        source = VolumeSource(Path(plan.source))
    cut = bands(plan, source)
    if cut is None:
        with naming(plan.dataset):
            decompress(Path(plan.source), ring)
        return False
    data = source.data_path  # the header already named it (a .BRIK.gz beside its .HEAD)
    with (
        naming(plan.dataset),
        decompressing(data),
        GzipStream(data) as stream,
        open(ring, "wb") as out,
    ):
        short = InputError(f"{data}: ends before the voxels its header describes")
        head = bytes(stream.read(cut[0].start))
        if len(head) < cut[0].start:
            raise short

        def fill(pool, band: Band, at: int) -> None:
            stream.seek(band.start)
            if stream.copy_to(out.fileno(), at, band.end - band.start) < band.end - band.start:
                raise short

        def task(band: Band, slab: int, at: int):
            window = (head, ring, band.start, band.end - band.start, at)
            return _band_slab, plan, work.root, slab, work.scratch, window

        _ring(plan, workers, cut, fill, task)
    return True


def _sections_in_bands(work: Work, workers: int, ring: Path, source) -> None:
    """A stack's PNG or JPEG sections each decoded once, band after band, into a ring the
    slabs read their boxes from: before, each of a band's slabs side by side decoded every
    section of the band again (4x the decoding of a 788 x 932 stack cut in four). The workers
    decode (a few sections per task, submitted before the band's slabs: the queue is first in,
    first out); threads of this process decoding instead made the allocator return and fault
    in each decoded image again (13x the page faults, 2x the system time)."""
    plan = work.plan
    per = source.section_bytes * len(source.files)
    cut = section_bands(plan, source)
    ring.touch()

    def fill(pool, band: Band, at: int) -> None:
        first, last = band.start // per, band.end // per
        step = max(1, -(-(last - first) // (4 * workers)))
        parts = [
            pool.submit(
                _decode_sections,
                plan.dataset,
                source,
                ring,
                k,
                min(k + step, last),
                at + (k - first) * per,
            )
            for k in range(first, last, step)
        ]
        for part in parts:
            part.result()

    def task(band: Band, slab: int, at: int):
        opened = source.windowed(ring, band.start // per, (band.end - band.start) // per, at)
        return _band_slab, plan, work.root, slab, work.scratch, opened

    with naming(plan.dataset):
        _ring(plan, workers, cut, fill, task)


def _decode_sections(dataset: str, source, ring: Path, first: int, last: int, at: int) -> None:
    """Sections ``first..last`` decoded into ``ring`` from byte ``at`` (in a worker)."""
    with naming(dataset), open(ring, "r+b", buffering=0) as out:
        for k in range(first, last):
            pixels = source.decode_section(k)
            os.pwrite(out.fileno(), memoryview(pixels).cast("B"), at)
            at += pixels.nbytes


def _ring(plan: Plan, workers: int, cut: list[Band], fill, task) -> None:
    """Each band ``fill``-ed into a slot of the ring (the pool, its byte offset), then its
    slabs submitted (``task``: the call of one slab reading that slot); a slot is filled again
    once every slab of the band before has read its box. A ring no smaller than everything (a
    few deep bands: cube slabs) is unwrapped."""
    size = max(b.end - b.start for b in cut)  # every band's but the last
    slots = RING_SLOTS if RING_SLOTS * size < cut[-1].end - cut[0].start else len(cut)
    context = _fork()
    _RELEASED[:] = [context.Semaphore(0) for _ in range(slots)]
    waiting = [0] * slots  # slabs of the band in each slot that have not read it yet
    futures = []
    try:
        with _pool(min(workers, plan.stages[0].count)) as pool:
            try:
                for b, band in enumerate(cut):
                    slot = b % slots
                    for _ in range(waiting[slot]):
                        _wait(_RELEASED[slot], futures)
                    fill(pool, band, slot * size)
                    for i in band.slabs:
                        futures.append(pool.submit(*task(band, i, slot * size), slot))
                    waiting[slot] = len(band.slabs)
                for future in futures:
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # slabs not started yet are not run
                raise
    finally:
        _RELEASED.clear()


def _wait(released, futures) -> None:
    """One release of ``released``; a worker's failure (or death) is raised meanwhile."""
    while not released.acquire(timeout=0.2):
        for future in futures:
            if future.done():
                future.result()


def _band_slab(plan: Plan, root: Path, slab: int, scratch: Path, window, slot: int):
    """A slab of stage 0 read from its band of the ring (in a forked worker): ``window`` is a
    .gz source's ``Window`` arguments, or the stack reading its band's sections (``windowed``);
    its slot is released once the slab holds its box (a failed slab is seen by ``_wait``)."""
    from .sources.volume import VolumeSource, Window

    with naming(plan.dataset), contextlib.ExitStack() as stack:
        if isinstance(window, tuple):
            band = stack.enter_context(Window(*window))
            window = VolumeSource(Path(plan.source), window=band)
        build_slab(
            plan, root, 0, slab, scratch=scratch, opened=window, after_read=_RELEASED[slot].release
        )


def _slab(plan: Plan, root: Path, stage: int, slab: int, scratch: Path, source, **kw):
    with naming(plan.dataset):
        build_slab(plan, root, stage, slab, scratch=scratch, decompressed=source, **kw)


def convert(work: Work, workers: int = 1) -> None:
    """One dataset, stage after stage, ``workers`` slabs of a stage at a time; then its
    ``info`` and its QC page."""
    plan = work.plan
    opened = work.source
    if opened is None and is_slice_stack(plan.source):
        # its headers scanned once per job: the slabs (and workers) get this one
        opened = open_source(plan.source, **plan.source_options)
    ring = work.scratch / "source.bands" if _banded(work, opened) else None
    source = None  # the source decompressed whole (not in bands)
    # the scales a slab makes whole stay in memory for the QC page (lossless chunks only)
    held = {} if work.qc is not None and not plan.raw_copies else None
    try:
        for s, stage in enumerate(plan.stages):
            if s == 0 and ring is not None:
                if _stage0_in_bands(work, max(workers, 1), ring, opened):
                    continue
                source = ring
            args = [(plan, work.root, s, i, work.scratch, source) for i in range(stage.count)]
            first = opened if s == 0 and ring is None else None
            if workers < 2 or stage.count < 2:
                for a in args:
                    _slab(*a, held=held, opened=first)
                continue
            # a volume's workers open their file again (a header); a stack goes as it is
            shared = first if is_slice_stack(plan.source) else None
            with _pool(min(workers, stage.count)) as pool:
                for future in [pool.submit(_slab, *a, opened=shared) for a in args]:
                    future.result()
    except BrokenExecutor:  # a process pool's worker died
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
        except BrokenExecutor:  # a process pool's worker died
            raise Failed("a worker process was killed (out of memory?)") from None
    failed = [f for f in failed if f]
    if failed:
        raise Failed(
            f"{len(failed)} of this job's {len(works)} datasets failed (each said why, in its log)"
        )
    if manifest is not None:
        write_manifest(manifest, {"datasets": [w.plan.dataset for w in works]})
