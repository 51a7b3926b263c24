"""Annotations from the files our users hold: coordinate tables and tractograms.

* ``points``: a CSV or TSV (BIDS ``*_electrodes.tsv`` as they are: ``n/a`` is missing) with
  ``x``, ``y``, ``z`` columns in world millimetres. Every other column becomes a property:
  numbers as float32 (missing: NaN), text as an enum (each distinct value a label: an electrode's
  name, its group, a region). A ``radius`` column (mm) makes ellipsoids (spheres); so does BIDS
  ``size``, a contact's area in square millimetres (radius ``sqrt(size / pi)``).
* ``streamlines``: a tractogram nibabel reads (TRK, TCK, TRX where nibabel has it), in nibabel's
  RAS+ millimetres, the space the volumes are placed in (voxel centres at ``affine @ ijk``: the
  half-voxel convention of TRK is nibabel's to undo, and it does). Properties: length (mm),
  point count, a direction colour (``|end - start|`` as RGB, the usual DEC colouring), and the
  file's per-streamline data.
* Relationships: with a ``segmentation`` dataset of the same sheet, each point relates to the
  label it falls in, each streamline to the labels of its two ends (0, background, is none),
  read from the segmentation's source with nibabel.
"""

from __future__ import annotations

import logging
import re
from array import array
from pathlib import Path

import numpy as np

from ..errors import InputError
from .collection import Annotations, Property

log = logging.getLogger(__name__)

COORDS = ("x", "y", "z")
MAX_LABELS = 65535  # distinct values of a text column (uint16 enum)


def property_id(column: str, taken: set[str]) -> str:
    """A valid property id (``^[a-z][a-zA-Z0-9_]*$``) for a column name, unique."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", column.strip())
    name = name[:1].lower() + name[1:]
    if not re.match(r"^[a-z]", name):
        name = "p_" + name
    base, k = name, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def read_table(path: Path):
    import pandas as pd

    sep = "\t" if Path(path).suffix.lower() in (".tsv", ".tab") else None
    try:
        return pd.read_csv(path, sep=sep, engine="python", na_values=["n/a", "N/A", ""])
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable CSV/TSV table ({e})") from None


def points_table(path: Path) -> tuple[Annotations, list[Property]]:
    """The points (or spheres) of a coordinate table and its other columns as properties."""
    table = read_table(path)
    columns = {str(c).strip().lower(): c for c in table.columns}
    missing = [c for c in COORDS if c not in columns]
    if missing:
        raise InputError(f"{path}: no column {', '.join(missing)} (coordinates in mm: x, y, z)")
    xyz = table[[columns[c] for c in COORDS]].apply(_numbers, path=path).to_numpy(np.float64)
    keep = np.isfinite(xyz).all(axis=1)
    if not keep.all():
        log.warning("%s: %d rows without coordinates (n/a) left out", path, (~keep).sum())
    table, xyz = table[keep].reset_index(drop=True), xyz[keep]
    if not len(table):
        raise InputError(f"{path}: no row with coordinates")
    radius = None
    if "radius" in columns:
        radius = _numbers(table[columns["radius"]], path).to_numpy(np.float64)
    elif "size" in columns:  # BIDS: a contact's area, mm^2
        radius = np.sqrt(_numbers(table[columns["size"]], path).to_numpy(np.float64) / np.pi)
    properties, values, taken = [], {}, set()
    for column in table.columns:
        if str(column).strip().lower() in COORDS:
            continue
        prop, value = _column_property(table[column], property_id(str(column), taken), path)
        if prop is not None:
            properties.append(prop)
            values[prop.id] = value
    n = len(table)
    if radius is not None:
        radius = np.where(np.isfinite(radius), radius, 0.0)
        geometry = np.concatenate([xyz, np.repeat(radius[:, None], 3, axis=1)], axis=1)
        kind = "ellipsoid"
    else:
        geometry, kind = xyz, "point"
    batch = Annotations(
        kind, np.arange(n, dtype=np.uint64), geometry.astype(np.float32), None, values
    )
    return batch, properties


def _numbers(column, path):
    import pandas as pd

    out = pd.to_numeric(column, errors="coerce")
    bad = column.notna() & out.isna()
    if bad.any():
        row = int(np.nonzero(bad.to_numpy())[0][0]) + 2  # 1-based, after the header
        raise InputError(
            f"{path}: row {row}, column {column.name}: {column[bad].iloc[0]!r} is not a number"
        )
    return out


def _column_property(column, pid: str, path):
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce")
    if column.notna().any() and (numbers.notna() == column.notna()).all():
        return Property(pid, "float32", str(column.name)), numbers.to_numpy(np.float32)
    text = column.astype("string").fillna("")
    labels = list(dict.fromkeys(text.tolist()))
    if len(labels) > MAX_LABELS:
        log.warning(
            "%s: column %s has %d distinct values: left out", path, column.name, len(labels)
        )
        return None, None
    index = {v: i for i, v in enumerate(labels)}
    dtype = "uint8" if len(labels) <= 256 else "uint16"
    values = np.array([index[v] for v in text.tolist()], dtype=dtype)
    return Property(pid, dtype, str(column.name), tuple(labels)), values


def tractogram(path: Path, scratch: Path | None = None) -> tuple[Annotations, list[Property]]:
    """Every streamline of a tractogram as a polyline, in RAS+ mm, with its properties.

    Read lazily, ``BATCH_POINTS`` points at a time, into ``scratch`` (the points as a memory
    map: a tractogram need not fit in memory); without ``scratch``, in memory."""
    import nibabel as nib

    try:
        tracts = nib.streamlines.load(str(path), lazy_load=True)
        staged = _staged(tracts.tractogram, scratch)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 (nibabel raises many kinds for a bad file)
        raise InputError(
            f"{path}: not a tractogram nibabel reads ({type(e).__name__}: {e})"
        ) from None
    points, lengths, per_streamline = staged
    keep = lengths > 0  # an empty streamline has no points: dropping it moves none
    if not keep.all():
        log.warning("%s: %d empty streamlines left out", path, (~keep).sum())
    lengths = lengths[keep]
    n = len(lengths)
    if not n:
        raise InputError(f"{path}: no streamline")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    batch = Annotations("polyline", np.arange(n, dtype=np.uint64), points, offsets)
    length = np.zeros(n)
    for a, part in batch.parts():  # lengths, part by part
        pts, off = part.geometry.astype(np.float64), part.offsets
        steps = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        steps[off[1:-1] - 1] = 0.0  # no step from one streamline to the next
        length[a : a + len(part)] = np.add.reduceat(np.append(steps, 0.0), off[:-1])
    direction = np.abs(points[offsets[1:] - 1].astype(np.float64) - points[offsets[:-1]])
    norm = np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    batch.values.update(
        length=length.astype(np.float32),
        points=lengths.astype(np.int32),
        direction=np.round(direction / norm * 255).astype(np.uint8),
    )
    properties = [
        Property("length", "float32", "length (mm)"),
        Property("points", "int32", "points"),
        Property("direction", "rgb", "direction of the ends, |dx| |dy| |dz| as RGB"),
    ]
    taken = {p.id for p in properties}
    for key, data in per_streamline.items():
        data = data.reshape(len(keep), -1)[keep]
        for j in range(data.shape[1]):
            name = key if data.shape[1] == 1 else f"{key}_{j}"
            pid = property_id(name, taken)
            properties.append(Property(pid, "float32", name))
            batch.values[pid] = data[:, j]
    return batch, properties


BATCH_POINTS = 1 << 18  # points read before they are written out (and their arrays freed)


def _staged(tractogram, scratch: Path | None):
    """``(points (P, 3) float32, streamline lengths, per-streamline data)`` of a lazily loaded
    tractogram; the points appended to ``scratch/points.f32`` as they come, when given, and
    returned as a memory map of it."""
    lengths, data, pending, count, blocks = array("q"), {}, [], 0, []
    path = None if scratch is None else Path(scratch) / "points.f32"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def flush():
        block = np.concatenate(pending) if pending else np.zeros((0, 3), "<f4")
        if path is None:
            blocks.append(block)
        else:
            with open(path, "ab") as f:
                f.write(block.tobytes())
        pending.clear()

    # ``.streamlines`` (in RAS+ mm): a lazy tractogram's items are not moved there (nibabel 5)
    for streamline in tractogram.streamlines:
        s = np.asarray(streamline, dtype="<f4").reshape(-1, 3)
        lengths.append(len(s))
        pending.append(s)
        count += len(s)
        if count >= BATCH_POINTS:
            flush()
            count = 0
    flush()
    for key, values in tractogram.data_per_streamline.items():
        data[key] = [np.asarray(v, np.float32).ravel() for v in values]
    lengths = np.frombuffer(lengths, dtype=np.int64) if len(lengths) else np.zeros(0, np.int64)
    total = int(lengths.sum())
    if path is not None and total:
        points = np.memmap(path, "<f4", "r", shape=(total, 3))
    else:
        points = np.concatenate(blocks) if blocks else np.zeros((0, 3), "<f4")
    per_streamline = {k: np.stack(v) for k, v in data.items()}
    return points, lengths, per_streamline


def label_volume(path: Path):
    """A segmentation's labels and affine, read with nibabel (the sheet's source file)."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    while data.ndim > 3:
        data = data[..., 0]
    return data, img.affine


def labels_at(points: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The label of the voxel each world point (mm) falls in; 0 outside the volume."""
    ijk = np.rint(
        (np.linalg.inv(affine) @ np.c_[points.astype(np.float64), np.ones(len(points))].T)[:3].T
    ).astype(np.int64)
    inside = ((ijk >= 0) & (ijk < labels.shape)).all(axis=1)
    out = np.zeros(len(points), dtype=np.uint64)
    out[inside] = labels[tuple(ijk[inside].T)].astype(np.uint64)
    return out


def relate(batch: Annotations, labels: np.ndarray, affine: np.ndarray, name: str) -> None:
    """Relationship ``name``: a point's label; a streamline's labels at both ends (distinct,
    background left out)."""
    pts, off = batch.points_of()
    if batch.kind == "polyline":
        ends = np.stack(
            [labels_at(pts[off[:-1]], labels, affine), labels_at(pts[off[1:] - 1], labels, affine)],
            1,
        )
        ends[:, 1] = np.where(ends[:, 1] == ends[:, 0], 0, ends[:, 1])
    else:
        ends = labels_at(pts, labels, affine)[:, None]
    mask = ends > 0
    offsets = np.zeros(len(batch) + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=offsets[1:])
    batch.related[name] = (offsets, ends[mask].astype(np.uint64))
