"""Label tables (atlas region names) and the segment properties Neuroglancer shows for them.

Atlases ship their names in several shapes, all read here:

* CSV/TSV with a header: an id column (``id``, ``index``, ``value``, ``label``...), a name column
  (``name``, ``label_name``, ``region``...), optionally ``description``, ``tags`` and a colour as
  ``r,g,b`` columns or a ``color``/``colour`` hex value (BIDS ``dseg.tsv`` files fit too).
* FreeSurfer colour lookup tables (``FreeSurferColorLUT.txt``): ``id name R G B A`` lines,
  ``#`` comments.
* The plain ``id name`` lists atlases ship (AAL's tab-separated ``.txt``, AAL3's ``id name
  group`` with a trailing colour-group number, headerless CSV).

The table becomes the ``neuroglancer_segment_properties`` info that names segments in the viewer,
and its colours a viewer state's ``segmentColors``.
"""

import csv
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .store import write_atomic

log = logging.getLogger(__name__)

ID_COLUMNS = ("id", "index", "idx", "label_id", "labelid", "value", "label_value", "label")
NAME_COLUMNS = ("name", "label_name", "labelname", "region", "region_name", "structure", "label")
DESCRIPTION_COLUMNS = ("description", "desc", "long_name", "full_name")
TAG_COLUMNS = ("tags", "tag")
RGB_COLUMNS = (("r", "g", "b"), ("red", "green", "blue"))
HEX_COLUMNS = ("color", "colour", "hex", "rgb")
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


@dataclass(frozen=True)
class Label:
    id: int
    name: str
    description: str = ""
    tags: tuple[str, ...] = ()
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class LabelTable:
    """Labels sorted by id; ``source`` is the file they came from."""

    labels: tuple[Label, ...]
    source: str = ""
    by_id: dict[int, Label] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(sorted(self.labels, key=lambda lab: lab.id)))
        object.__setattr__(self, "by_id", {lab.id: lab for lab in self.labels})

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> dict[int, str]:
        return {lab.id: lab.name for lab in self.labels}

    @property
    def colors(self) -> dict[int, str]:
        """``{id: "#rrggbb"}`` for the labels that have a colour (a viewer's segmentColors)."""
        return {
            lab.id: "#{:02x}{:02x}{:02x}".format(*lab.color)
            for lab in self.labels
            if lab.color is not None
        }


def read_label_table(path, *, where: str = "") -> LabelTable:
    """The label table in ``path`` (CSV/TSV with header, FreeSurfer LUT or ``id name`` list)."""
    path = Path(path)
    prefix = f"{where}: {path}" if where else str(path)
    rows = _rows(path, prefix)
    if not rows:
        raise InputError(f"{prefix}: the label table has no rows")
    first_line, first = rows[0]
    if _is_integer(first[0]):
        labels = [(n, _headerless(fields, f"{prefix} line {n}")) for n, fields in rows]
    else:
        labels = _with_header(first, rows[1:], prefix)
        if not labels:
            raise InputError(f"{prefix}: the label table has a header (line {first_line}) only")
    seen: dict[int, int] = {}
    for n, label in labels:
        if label.id in seen:
            raise InputError(
                f"{prefix} line {n}: id {label.id} is already on line {seen[label.id]}"
            )
        seen[label.id] = n
    return LabelTable(tuple(label for _, label in labels), source=str(path))


def _rows(path: Path, prefix: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each data line; blank and ``#`` comment lines skipped."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{prefix}: cannot read the label table ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # older atlas files; every byte decodes
    lines = [
        (n, line)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        return []
    suffix = path.suffix.lower()
    if suffix == ".csv" or (suffix != ".tsv" and "," in lines[0][1]):
        split = _csv_splitter(",")
    elif suffix == ".tsv" or all("\t" in line for _, line in lines):
        split = _csv_splitter("\t")
    else:
        split = str.split  # FreeSurfer LUT, AAL3: runs of spaces; names have none
    return [(n, [f.strip() for f in split(line)]) for n, line in lines]


def _csv_splitter(delimiter: str):
    def split(line: str) -> list[str]:
        return next(csv.reader(io.StringIO(line), delimiter=delimiter))

    return split


def _is_integer(text: str) -> bool:
    try:
        _parse_id(text, "")
    except InputError:
        return False
    return True


def _parse_id(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: id {text!r} is not an integer") from None
    if not value.is_integer():
        raise InputError(f"{where}: id {text!r} is not an integer")
    number = int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else int(value)
    if not 0 <= number < 2**64:
        raise InputError(f"{where}: id {text} is not a uint64 segment id")
    return number


def _headerless(fields: list[str], where: str) -> Label:
    """``id name [R G B [A]]``; other trailing fields (AAL3's colour group) are ignored."""
    if len(fields) < 2 or not fields[1]:
        raise InputError(f"{where}: expected an id and a name")
    color = None
    if len(fields) >= 5 and all(_is_byte(f) for f in fields[2:5]):
        color = tuple(int(f) for f in fields[2:5])
    return Label(_parse_id(fields[0], where), fields[1], color=color)


def _is_byte(text: str) -> bool:
    return text.isdigit() and int(text) <= 255


def _with_header(header: list[str], rows, prefix: str) -> list[tuple[int, Label]]:
    columns = {name.strip().lower(): i for i, name in reversed(list(enumerate(header)))}
    id_col = next((c for c in ID_COLUMNS if c in columns), None)
    if id_col == "label" and not any(c in columns for c in NAME_COLUMNS[:-1]):
        id_col = None  # "label" alone is a name column
    name_col = next((c for c in NAME_COLUMNS if c in columns and c != id_col), None)
    if id_col is None or name_col is None:
        raise InputError(
            f"{prefix}: the header needs an id column ({', '.join(ID_COLUMNS[:-1])}) and a "
            f"name column ({', '.join(NAME_COLUMNS[:-1])}); it has {', '.join(header)}"
        )
    desc_col = next((c for c in DESCRIPTION_COLUMNS if c in columns), None)
    tag_col = next((c for c in TAG_COLUMNS if c in columns), None)
    rgb_cols = next((rgb for rgb in RGB_COLUMNS if all(c in columns for c in rgb)), None)
    hex_col = next((c for c in HEX_COLUMNS if c in columns), None)

    def cell(fields: list[str], col: str | None) -> str:
        if col is None:
            return ""
        i = columns[col]
        return fields[i] if i < len(fields) else ""

    labels = []
    for n, fields in rows:
        where = f"{prefix} line {n}"
        if len(fields) > len(header):
            raise InputError(f"{where}: {len(fields)} fields but the header has {len(header)}")
        text = cell(fields, id_col)
        if not text:
            raise InputError(f"{where}: the {id_col} column is empty")
        color = None
        if rgb_cols:
            values = [cell(fields, c) for c in rgb_cols]
            if any(values):
                if not all(_is_byte(v) for v in values):
                    raise InputError(f"{where}: colour {values} is not three integers 0-255")
                color = tuple(int(v) for v in values)
        elif hex_col and cell(fields, hex_col):
            match = _HEX.fullmatch(cell(fields, hex_col))
            if not match:
                raise InputError(f"{where}: colour {cell(fields, hex_col)!r} is not #rrggbb")
            color = tuple(int(match[1][i : i + 2], 16) for i in (0, 2, 4))
        label = Label(
            _parse_id(text, where),
            cell(fields, name_col),
            cell(fields, desc_col),
            _tags(cell(fields, tag_col)),
            color,
        )
        labels.append((n, label))
    return labels


def _tags(text: str) -> tuple[str, ...]:
    """Tags separated by spaces, commas or semicolons (Neuroglancer's tags have no spaces and
    no leading ``#``)."""
    return tuple(t.lstrip("#") for t in re.split(r"[\s,;]+", text) if t.lstrip("#"))


def segment_properties(table: LabelTable, ids_present=None) -> dict:
    """The ``neuroglancer_segment_properties`` info for ``table``.

    ``ids_present`` (e.g. the labels found in the volume) limits the listed ids to those; an id
    present but missing from the table is listed with an empty name (and logged), so that every
    segment of the volume can still be found in the viewer's list.
    """
    if ids_present is None:
        ids = [lab.id for lab in table.labels]
    else:
        ids = sorted({int(i) for i in ids_present})
        missing = [i for i in ids if i not in table.by_id]
        if missing:
            log.warning(
                "%s: %d ids of the volume have no name (first: %s)",
                table.source,
                len(missing),
                ", ".join(map(str, missing[:5])),
            )
    labels = [table.by_id.get(i, Label(i, "")) for i in ids]
    properties: list[dict] = [
        {"id": "label", "type": "label", "values": [lab.name for lab in labels]}
    ]
    if any(lab.description for lab in labels):
        properties.append(
            {
                "id": "description",
                "type": "description",
                "values": [lab.description for lab in labels],
            }
        )
    tags: dict[str, int] = {}  # lower-cased tag -> index; tags match case-insensitively
    spelled: list[str] = []
    for lab in labels:
        for tag in lab.tags:
            if tag.lower() not in tags:
                tags[tag.lower()] = len(spelled)
                spelled.append(tag)
    if spelled:
        properties.append(
            {
                "id": "tags",
                "type": "tags",
                "tags": spelled,
                "values": [sorted({tags[t.lower()] for t in lab.tags}) for lab in labels],
            }
        )
    return {
        "@type": "neuroglancer_segment_properties",
        "inline": {"ids": [str(i) for i in ids], "properties": properties},
    }


def write_segment_properties(folder, table: LabelTable, ids_present=None) -> Path:
    """``<folder>/info``: the segment properties of ``table`` (see ``segment_properties``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = segment_properties(table, ids_present)
    write_atomic(folder / "info", json.dumps(info, ensure_ascii=False).encode())
    return folder / "info"
