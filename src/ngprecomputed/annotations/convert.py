"""One annotation dataset from its source: what the ``annotations`` rule runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from ..report import points_picture
from ..store import write_atomic
from .collection import PREVIEW, SUMMARY
from .sources import label_volume, points_table, relate, tractogram
from .write import write_collection

log = logging.getLogger(__name__)

PREVIEW_POINTS = 200_000  # at most this many points drawn in the preview


def convert(
    kind: str,
    source: Path,
    folder: Path,
    segmentation: tuple[str, Path] | None = None,
    sharded: bool | None = None,
    scratch: Path | None = None,
) -> dict:
    """Read ``source`` (a ``points`` table or a ``streamlines`` tractogram), relate it to
    ``segmentation`` (its dataset name, the relationship's id, and its source file), write the
    collection into ``folder``; returns its info. ``scratch``: a folder for a tractogram's
    points and records as memory maps (removed at the end), so that the job holds a part of
    them at a time."""
    if kind == "streamlines":
        batch, properties = tractogram(Path(source), scratch)
    else:
        batch, properties = points_table(Path(source))
    log.info("%s: %d %s from %s", Path(folder).name, len(batch), kind, source)
    relationships = []
    if segmentation is not None:
        name, path = segmentation
        labels, affine = label_volume(Path(path))
        relate(batch, labels, affine, name)
        relationships.append(name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ranges = {}
    for prop in properties:
        values = batch.values[prop.id]
        if prop.type != "rgb" and values.ndim == 1 and np.isfinite(values).any():
            ranges[prop.id] = [float(np.nanmin(values)), float(np.nanmax(values))]
    summary = {"count": len(batch), "kind": kind, "ranges": ranges}
    write_atomic(folder / SUMMARY, json.dumps(summary, indent=1).encode())
    points = batch.points_of()[0]
    step = max(len(points) // PREVIEW_POINTS, 1)
    write_atomic(folder / PREVIEW, points_picture(points[::step].astype(np.float64)))
    info = write_collection(folder, batch, properties, relationships, sharded, scratch=scratch)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return info
