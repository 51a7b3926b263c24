"""One job of the pyramid: read a slab's input once, write every scale of its stage."""

import logging
from pathlib import Path

from .downsample import downsample
from .plan import Plan
from .sources import VolumeSource, open_source
from .store import ScaleStore, write_manifest
from .values import check_sample, to_stored

log = logging.getLogger(__name__)


def scale_store(plan: Plan, root: Path, index: int) -> ScaleStore:
    """The dataset's chunks of one scale, in the dataset's encoding."""
    s = plan.scales[index]
    return ScaleStore(
        root,
        s.key,
        s.grid,
        plan.data_type,
        plan.num_channels,
        plan.encoding,
        plan.encoding_options,
        plan.gzip and not s.sharding,  # a sharded scale gzips nothing: its data is in shards
        sharding=s.sharding,
    )


def raw_store(plan: Plan, scratch: Path, index: int) -> ScaleStore:
    """A raw copy of one scale (lossy datasets): what the next stage reads."""
    s = plan.scales[index]
    return ScaleStore(scratch, s.key, s.grid, plan.data_type, plan.num_channels)


def source_store(plan: Plan, root: Path, scratch: Path | None, index: int) -> ScaleStore:
    """Where a stage reads scale ``index`` from: the dataset, or its raw copy."""
    if not plan.raw_copies:
        return scale_store(plan, root, index)
    if scratch is None:
        raise ValueError(f"{plan.dataset}: raw copies need a scratch folder")
    return raw_store(plan, scratch, index)


def build_slab(
    plan: Plan,
    root: Path,
    stage_index: int,
    slab_index: int,
    manifest: Path | None = None,
    gzip_index: Path | None = None,
    scratch: Path | None = None,
    decompressed: Path | None = None,
    held: dict | None = None,
    opened=None,
    threads: int = 1,
    after_read=None,
) -> None:
    """Write the chunks of slab ``slab_index`` of stage ``stage_index``, then its manifest.
    ``held``: a scale the slab makes whole is kept there, by index (its QC reads it);
    ``opened``: the source, already opened by this process; ``threads``: chunks written at a
    time (a fanned-out slab, alone in its job); ``after_read``: called once the slab's input is
    read and checked (its band of a source may then be reused).

    The raw pyramid is made from lossless data only: with a lossy encoding, the stage's last
    scale is also written raw to ``scratch`` for the next stage. If anything fails, the chunks
    this job already wrote are removed again.
    """
    stage = plan.stages[stage_index]
    box = plan.slab(stage_index, slab_index)
    inbox = plan.input_box(stage_index, slab_index)
    log.info(
        "%s: stage %d slab %d: reading %s of %s",
        plan.dataset,
        stage_index,
        slab_index,
        inbox,
        "the source" if stage.first == 0 else f"scale {stage.first - 1}",
    )
    if stage.first == 0:
        source = opened or open_source(
            plan.source, gzip_index, decompressed=decompressed, **plan.source_options
        )
        values = source.read(inbox)
        array = to_stored(values, plan)
        if isinstance(source, VolumeSource):  # before anything is written
            check_sample(source, plan, inbox, array, None if source.read_direct else values)
        del values
    else:
        array = source_store(plan, root, scratch, stage.first - 1).read_box(inbox)
    if after_read is not None:
        after_read()
    method = "mode" if plan.type == "segmentation" else "mean"
    raw_copy = None  # the next stage reads this stage's last scale from here
    if plan.raw_copies and stage_index + 1 < len(plan.stages):
        raw_copy = source_store(plan, root, scratch, stage.last)
    written: dict[str, list] = {}
    touched: list[tuple[ScaleStore, int]] = []
    try:
        for j in range(stage.first, stage.last + 1):
            if j > 0:
                array = downsample(array, plan.scales[j].factor, method)
            jbox = plan.box_at(box, stage.last, j)
            store = scale_store(plan, root, j)
            touched.append((store, j))
            written[store.dir.name] = store.write_box(jbox, array, threads)
            if held is not None and jbox == tuple((0, n) for n in plan.scales[j].size):
                held[j] = array
            if raw_copy is not None and j == stage.last:
                touched.append((raw_copy, j))
                raw_copy.write_box(jbox, array, threads)
            log.info(
                "%s: scale %d (%s): %d chunks",
                plan.dataset,
                j,
                store.dir.name,
                len(written[store.dir.name]),
            )
    except BaseException:
        for store, j in touched:
            for path in store.files_in(plan.box_at(box, stage.last, j)):
                path.unlink(missing_ok=True)
        raise
    if manifest is not None:
        write_manifest(
            manifest,
            {
                "dataset": plan.dataset,
                "stage": stage_index,
                "slab": slab_index,
                "chunks": {key: [list(f) for f in files] for key, files in written.items()},
            },
        )
