"""Settings have one set of defaults, the workflow's schemas (read here directly, not with the
package's loader)."""

import inspect
import json
from pathlib import Path

import yaml

from ngprecomputed.encodings import compressed_segmentation, jpeg
from ngprecomputed.settings import Options

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"


def _defaults(name):
    props = json.loads((SCHEMAS / f"{name}.schema.json").read_text())["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


def test_options_take_the_schemas_defaults():
    sheet, config = _defaults("samples"), _defaults("config")
    o = Options()
    assert o.type == sheet["type"]
    assert o.jpeg_quality == sheet["jpeg_quality"]
    assert o.block_size == (int(sheet["block_size"]),) * 3
    assert o.sharded is sheet["sharded"]
    assert o.gzip is config["gzip"]
    assert o.chunk_voxels == config["chunk_voxels"]
    assert o.voxels_per_job == config["voxels_per_job"]


def test_given_settings_win():
    o = Options(type="segmentation", jpeg_quality=50, block_size=(4, 4, 4), gzip=True)
    assert (o.type, o.jpeg_quality, o.block_size, o.gzip) == ("segmentation", 50, (4, 4, 4), True)


def test_codecs_have_no_defaults_of_their_own():
    for fn, name in ((jpeg.encode, "quality"), (compressed_segmentation.encode, "block_size")):
        assert inspect.signature(fn).parameters[name].default is inspect.Parameter.empty


def test_config_yaml_agrees_with_the_schema():
    """Every config key has its default in the schema; config.yaml repeats none of them with
    a different value (a second copy that could drift)."""
    config = yaml.safe_load((SCHEMAS.parents[1] / "config" / "config.yaml").read_text())
    defaults = _defaults("config")
    props = json.loads((SCHEMAS / "config.schema.json").read_text())["properties"]
    assert set(config) <= set(props)
    assert {k: v for k, v in config.items() if defaults.get(k) != v} == {}
