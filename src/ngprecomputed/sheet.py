"""The sample sheet: one CSV row per dataset, turned into validated, typed settings.

Every problem is reported as one line naming the sheet, the row (1 = first data row), the dataset
and the column, before any job runs.
"""

import csv
import glob
import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path

import jsonschema

from .errors import InputError
from .info import read_info
from .schemas import load_schema
from .settings import Options, edges
from .sources.volume import image_files


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str  # a volume file, or a slice stack: folders or patterns, ';' between channels
    options: Options

    @property
    def inputs(self) -> list[str]:
        """The files and folders the dataset reads (what Snakemake tracks)."""
        parts = self.path.split(";")
        if len(parts) == 1 and Path(parts[0]).is_file():  # with the files nibabel reads beside it
            return [str(p) for p in image_files(Path(parts[0]))]
        out = []
        for part in parts:
            out += sorted(glob.glob(part)) if any(c in part for c in "*?[") else [part]
        return out


def _check_parts(parts: list[Path], stack: bool, here: str, require_files: bool) -> bool:
    """Each part exists (a file, a folder, or a pattern that matches); is it a slice stack?"""
    for part in parts:
        if any(c in str(part) for c in "*?["):
            stack = True
            if not glob.glob(str(part)):
                raise InputError(f"{here}: no file matches {part}")
        elif part.is_dir():
            stack = True
        elif require_files and not part.is_file():
            raise InputError(f"{here}: no such file {part}")
    return stack


def _side_file(text, base: Path, where: str, n: int, row: dict, column: str) -> str | None:
    """A file named in a column besides path (a label or mesh table), resolved and checked."""
    if not text:
        return None
    if row["type"] != "segmentation":
        raise InputError(
            f"{where}: row {n} (dataset {row['dataset']}), column {column}: only for segmentations"
        )
    path = resolve_path(text, base)
    if not path.is_file():
        raise InputError(
            f"{where}: row {n} (dataset {row['dataset']}), column {column}: no such file {path}"
        )
    return str(path)


def _meshes(text, base: Path, where: str, n: int, row: dict) -> str | None:
    if text in ("generate", "multilod"):
        if row["type"] != "segmentation":
            raise InputError(
                f"{where}: row {n} (dataset {row['dataset']}), column meshes: "
                "only for segmentations"
            )
        return text
    return _side_file(text, base, where, n, row, "meshes")


def _sizes(text: str | None) -> tuple[float, float, float] | None:
    """``"0.02"`` or ``"0.02,0.02,0.04"`` millimetres (column, row, slice spacing)."""
    if not text:
        return None
    sizes = tuple(float(v) for v in str(text).split(","))
    return sizes * 3 if len(sizes) == 1 else sizes


def resolve_path(text: str, base: Path) -> Path:
    """A sheet path: ``pkg://package/inner/path`` (inside an installed package), else relative
    to the sheet's folder."""
    if text.startswith("pkg://"):
        package, _, inner = text[len("pkg://") :].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"package {package!r} is not installed (pip install 'ngprecomputed[demo]')"
            )
        return Path(next(iter(spec.submodule_search_locations))) / inner
    p = Path(text).expanduser()
    return p if p.is_absolute() else (base / p)


def _typed(value: str, spec: dict):
    """Cell text to the schema's type where it parses; otherwise left for the schema to reject."""
    kind = spec.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    return value


def _records(sheet: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the CSV or TSV (blank lines and ``#`` comment lines skipped), as
    text (a tab in a header without commas, or ``.tsv``: tab-separated).

    Read with the standard library's csv, not pandas: importing pandas costs 0.3 s or more of
    every Snakemake run and of every cluster job's parse of the workflow (measured), and a sheet
    is a few rows of text; pandas stays for the annotation tables, which are numbers."""
    try:
        with open(sheet, newline="", encoding="utf-8-sig") as f:
            lines = [ln for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    except FileNotFoundError:
        raise InputError(f"{sheet}: sample sheet not found") from None
    except (UnicodeDecodeError, IsADirectoryError) as e:
        raise InputError(f"{sheet}: not a readable CSV ({e})") from None
    if not lines:
        raise InputError(f"{sheet}: empty sample sheet")
    tabs = Path(sheet).suffix.lower() in (".tsv", ".tab") or (
        "\t" in lines[0] and "," not in lines[0]
    )
    reader = csv.reader(lines, delimiter="\t" if tabs else ",", strict=True)
    try:
        header, *rows = list(reader)
    except csv.Error as e:
        raise InputError(
            f"{sheet}: not a readable sample sheet (row {reader.line_num - 1}: {e})"
        ) from None
    for n, cells in enumerate(rows, start=1):
        if len(cells) > len(header):  # a longer row is an error, not an index
            raise InputError(f"{sheet}: row {n} has {len(cells)} cells, the header {len(header)}")
    return [c.strip() for c in header], rows


def read_rows(sheet: Path, schema: dict) -> list[dict]:
    """Rows of a CSV sheet as typed dicts (empty cells dropped), validated against the schema."""
    header, records = _records(sheet)
    return check_rows(str(sheet), header, records, schema)


def config_rows(records: list[dict], schema: dict, where: str = "config samples") -> list[dict]:
    """Rows given as a list of mappings (a host workflow's config), checked like a CSV sheet."""
    header = list(dict.fromkeys(key for record in records for key in record))
    cells = [["" if r.get(k) is None else str(r.get(k)) for k in header] for r in records]
    return check_rows(where, header, cells, schema)


def check_rows(sheet: str, header: list[str], records: list[list[str]], schema: dict):
    """Typed, validated rows; the first problem is raised as one line naming row and column."""
    props = schema["properties"]
    for col in schema["required"]:
        if col not in header:
            raise InputError(f"{sheet}: missing column '{col}' (columns: {', '.join(header)})")
    for col in header:
        if col not in props:
            raise InputError(f"{sheet}: unknown column '{col}' (known: {', '.join(props)})")
    if not records:
        raise InputError(f"{sheet}: no datasets")
    validator = jsonschema.Draft202012Validator(schema)
    rows, seen = [], {}
    for n, cells in enumerate(records, start=1):
        pairs = zip(header, cells, strict=False)  # a short row leaves its last cells empty
        row = {k: _typed(v.strip(), props[k]) for k, v in pairs if v.strip() != ""}
        where = f"{sheet}: row {n} (dataset {row.get('dataset', '?')})"
        for error in sorted(validator.iter_errors(row), key=lambda e: list(e.path)):
            column = error.path[0] if error.path else None
            if column is None and error.validator == "required":
                column = error.message.split("'")[1]
            raise InputError(f"{where}, column {column}: {error.message}")
        if row["dataset"] in seen:
            raise InputError(f"{where}, column dataset: duplicate of row {seen[row['dataset']]}")
        seen[row["dataset"]] = n
        rows.append(row)
    return rows


def load_sheet(
    sheet: str | Path, defaults: Options | None = None, schema_dir: Path | None = None
) -> list[Dataset]:
    """Validated datasets of ``sheet``; relative paths resolve against the sheet's folder."""
    sheet = Path(sheet)
    rows = read_rows(sheet, load_schema("samples", schema_dir))
    return datasets_from_rows(str(sheet), sheet.resolve().parent, rows, defaults or Options())


def datasets_from_rows(
    where: str, base: Path, rows: list[dict], defaults: Options, require_files: bool = True
) -> list[Dataset]:
    """Typed settings of validated rows, paths resolved against ``base``.

    ``require_files=False`` lets paths name files that other rules will make (a host workflow's
    outputs); they are planned once they exist."""
    datasets = []
    for n, row in enumerate(rows, start=1):
        here = f"{where}: row {n} (dataset {row['dataset']}), column path"
        try:
            parts = [resolve_path(p.strip(), base) for p in row["path"].split(";")]
        except FileNotFoundError as e:
            raise InputError(f"{here}: {e}") from None
        stack = len(parts) > 1 or "voxel_size" in row or "orientation" in row
        if len(parts) == 1 and (parts[0] / "info").is_file():  # a precomputed dataset
            kind = read_info(parts[0]).get("type")
            if kind != row["type"]:
                raise InputError(
                    f"{where}: row {n} (dataset {row['dataset']}), column type: "
                    f"{parts[0]} is a precomputed {kind}, not {row['type']}"
                )
            stack = False
        else:
            stack = _check_parts(parts, stack, here, require_files)
        if stack and "voxel_size" not in row:
            raise InputError(
                f"{where}: row {n} (dataset {row['dataset']}), column voxel_size: "
                "a slice stack needs its voxel size (mm)"
            )
        options = replace(
            defaults,
            type=row["type"],
            data_type=row.get("data_type"),
            chunk_size=edges(row.get("chunk_size")),
            max_scales=row.get("max_scales"),
            input_min=row.get("input_min"),
            input_max=row.get("input_max"),
            encoding=row.get("encoding", defaults.encoding),
            jpeg_quality=row.get("jpeg_quality", defaults.jpeg_quality),
            block_size=edges(row.get("block_size")) or defaults.block_size,
            voxel_size=_sizes(row.get("voxel_size")),
            orientation=row.get("orientation"),
            gzip=row.get("gzip", defaults.gzip),
            sharded=row.get("sharded", defaults.sharded),
            labels=_side_file(row.get("labels"), base, where, n, row, "labels"),
            meshes=_meshes(row.get("meshes"), base, where, n, row),
            segmentation=row.get("segmentation"),
        )
        datasets.append(Dataset(row["dataset"], ";".join(map(str, parts)), options))
    _check_segmentations(where, datasets)
    return datasets


ANNOTATION_TYPES = ("points", "streamlines")


def _check_segmentations(where: str, datasets: list[Dataset]) -> None:
    """A ``segmentation`` column names a segmentation row of the same sheet, and only
    annotation rows have one."""
    kinds = {d.name: d.options.type for d in datasets}
    for n, d in enumerate(datasets, start=1):
        name = d.options.segmentation
        if name is None:
            continue
        here = f"{where}: row {n} (dataset {d.name}), column segmentation"
        if d.options.type not in ANNOTATION_TYPES:
            raise InputError(f"{here}: only for {' and '.join(ANNOTATION_TYPES)}")
        if kinds.get(name) != "segmentation":
            raise InputError(f"{here}: {name} is not a segmentation dataset of this sheet")
