"""A sheet of 100 rows runs in one invocation; one corrupt row fails alone, with its reason."""

import nibabel as nib
import numpy as np
import pytest

from conftest import read_cloudvolume, read_tensorstore, run_failing, write_sheet

pytestmark = pytest.mark.workflow

ROWS = 100
CORRUPT = 57


def test_hundred_rows_one_corrupt(tmp_path, data):
    """Crops of the MNI T1 and of AAL3 (different shapes and offsets, images and labels), and
    one .nii.gz cut in half: 99 complete datasets equal to their sources, one named failure."""
    t1 = nib.load(data["mni_t1"])
    aal3 = nib.load(data["aal3"])
    t1_data, aal3_data = np.asanyarray(t1.dataobj), np.asanyarray(aal3.dataobj)
    rows, expected = [], {}
    for i in range(ROWS):
        name = f"subject{i:03d}"
        path = tmp_path / "inputs" / f"{name}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        labels = i % 3 == 0
        source, img = (aal3_data, aal3) if labels else (t1_data, t1)
        x, y, z = 40 + i % 7, 48 + i % 5, 36 + i % 11
        crop = source[i : i + x, 2 * i : 2 * i + y, i // 2 : i // 2 + z]
        nib.save(nib.Nifti1Image(crop, img.affine, img.header), path)
        if i == CORRUPT:
            whole = path.read_bytes()
            path.write_bytes(whole[: len(whole) // 2])
        rows.append({"dataset": name, "path": path, "type": "segmentation" if labels else "image"})
        expected[name] = crop
    sheet = write_sheet(tmp_path / "sheet.csv", rows)
    out = tmp_path / "results"

    _, errors = run_failing(tmp_path, sheet, out)

    corrupt = f"subject{CORRUPT:03d}"
    assert list(errors) == [corrupt], errors
    assert f"{corrupt}.nii.gz" in errors[corrupt][0]
    assert not (out / corrupt / "info").exists()
    for name, crop in expected.items():
        if name == corrupt:
            continue
        got = read_tensorstore(out / name, 0)
        np.testing.assert_array_equal(got[..., 0], crop, err_msg=name)
    for name in ("subject000", "subject001", "subject099"):  # a second reader, spot checks
        np.testing.assert_array_equal(read_cloudvolume(out / name, 0)[..., 0], expected[name])
