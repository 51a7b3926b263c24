"""One job of the pyramid: read a slab's input once, write every scale of its stage."""

import logging
from pathlib import Path

from .downsample import downsample
from .plan import Plan
from .sources import open_source
from .store import ScaleStore, write_manifest
from .values import to_stored

log = logging.getLogger(__name__)


def scale_store(plan: Plan, root: Path, index: int) -> ScaleStore:
    s = plan.scales[index]
    return ScaleStore(
        root, s.key, s.grid, plan.data_type, plan.num_channels, plan.encoding, plan.gzip
    )


def build_slab(
    plan: Plan,
    root: Path,
    stage_index: int,
    slab_index: int,
    manifest: Path | None = None,
    gzip_index: Path | None = None,
) -> None:
    """Write the chunks of slab ``slab_index`` of stage ``stage_index``, then its manifest.

    If anything fails, the chunks this job already wrote are removed again.
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
        array = to_stored(open_source(plan.source, gzip_index).read(inbox), plan)
    else:
        array = scale_store(plan, root, stage.first - 1).read_box(inbox)
    method = "mode" if plan.type == "segmentation" else "mean"
    written = {}
    try:
        for j in range(stage.first, stage.last + 1):
            if j > 0:
                array = downsample(array, plan.scales[j].factor, method)
            store = scale_store(plan, root, j)
            written[store.dir.name] = store.write_box(plan.box_at(box, stage.last, j), array)
            log.info(
                "%s: scale %d (%s): %d chunks",
                plan.dataset,
                j,
                store.dir.name,
                len(written[store.dir.name]),
            )
    except BaseException:
        for j in range(stage.first, stage.last + 1):
            store = scale_store(plan, root, j)
            for _, cbox in store.grid.chunks_in(plan.box_at(box, stage.last, j)):
                store.path(cbox).unlink(missing_ok=True)
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
