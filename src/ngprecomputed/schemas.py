"""The workflow's JSON schemas (``workflow/schemas/*.schema.json``): where every setting is
described and gets its default. Snakemake's ``validate`` fills a config's and a sheet row's
defaults from them; ``Options`` takes its defaults from them too.

JSON rather than YAML: Snakemake's ``validate`` parses a YAML schema with yte, about 10 ms, and
it is called once per sheet row (0.4 s for 40 rows); JSON takes well under a millisecond."""

import functools
import json
from pathlib import Path

from .workflow_files import workflow_root


@functools.cache
def load_schema(name: str, schema_dir: Path | None = None) -> dict:
    """The schema ``name`` (``config`` or ``samples``)."""
    schema_dir = schema_dir or workflow_root() / "workflow" / "schemas"
    return json.loads((Path(schema_dir) / f"{name}.schema.json").read_text())


def schema_defaults(name: str) -> dict:
    """``{property: default}`` of the schema's properties that have one."""
    props = load_schema(name)["properties"]
    return {key: spec["default"] for key, spec in props.items() if "default" in spec}
