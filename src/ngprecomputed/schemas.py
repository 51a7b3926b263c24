"""The workflow's JSON schemas (``workflow/schemas/*.schema.yaml``): where every setting is
described and gets its default. Snakemake's ``validate`` fills a config's and a sheet row's
defaults from them; ``Options`` takes its defaults from them too."""

import functools
from pathlib import Path

from .workflow_files import workflow_root


@functools.cache
def load_schema(name: str, schema_dir: Path | None = None) -> dict:
    """The schema ``name`` (``config`` or ``samples``); YAML is imported only when one is read
    (a job gets its settings as objects and never reads them)."""
    import yaml

    schema_dir = schema_dir or workflow_root() / "workflow" / "schemas"
    return yaml.safe_load((Path(schema_dir) / f"{name}.schema.yaml").read_text())


def schema_defaults(name: str) -> dict:
    """``{property: default}`` of the schema's properties that have one."""
    props = load_schema(name)["properties"]
    return {key: spec["default"] for key, spec in props.items() if "default" in spec}
