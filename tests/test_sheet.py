"""The sample sheet's text, read with the standard library's csv, against pandas' reading of
the same text (the independent reader: what a sheet meant when pandas read it)."""

import io

import pandas as pd
import pytest

from ngprecomputed.errors import InputError
from ngprecomputed.sheet import _records

SHEETS = {
    "plain": "dataset,path,type\nt1,t1.nii.gz,image\n",
    "quoted comma": 'dataset,path,type,labels\nt1,"a, b.nii.gz",segmentation,"x ""y"".txt"\n',
    "short row": "dataset,path,type,labels\nt1,t1.nii.gz,image\nt2,t2.nii,segmentation,l.txt\n",
    "crlf and spaces": "dataset, path ,type\r\n t1 ,t1.nii.gz,image\r\n",
    "empty cells": "dataset,path,type,labels\nt1,t1.nii.gz,image,\n,,,\n",
}


@pytest.mark.parametrize("name", SHEETS)
def test_rows_as_pandas_reads_them(tmp_path, name):
    sheet = tmp_path / "samples.csv"
    sheet.write_bytes(SHEETS[name].encode())
    header, rows = _records(sheet)
    table = pd.read_csv(
        io.StringIO(SHEETS[name]), dtype=str, keep_default_na=False, header=None
    ).fillna("")
    expected = table.to_numpy().tolist()
    assert header == [c.strip() for c in expected[0]]
    padded = [cells + [""] * (len(header) - len(cells)) for cells in rows]
    assert padded == expected[1:]


def test_bom_comments_blank_lines_and_tabs(tmp_path):
    sheet = tmp_path / "samples.tsv"
    text = "# made by hand\n\ndataset\tpath\ttype\n  # a comment\nt1\ta,b.nii\timage\n\n"
    sheet.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert _records(sheet) == (["dataset", "path", "type"], [["t1", "a,b.nii", "image"]])


@pytest.mark.parametrize(
    "text, message",
    [
        ('dataset,path,type\n"t1,t1.nii.gz,image\n', "not a readable sample sheet (row 1:"),
        ("dataset,path,type\nt1,t1.nii.gz,image,x\n", "row 1 has 4 cells, the header 3"),
        ("# only a comment\n\n", "empty sample sheet"),
    ],
)
def test_bad_text_said_in_one_line(tmp_path, text, message):
    sheet = tmp_path / "samples.csv"
    sheet.write_text(text)
    with pytest.raises(InputError) as e:
        _records(sheet)
    assert str(e.value).startswith(f"{sheet}: ") and message in str(e.value)
    assert "\n" not in str(e.value)
