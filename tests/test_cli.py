"""The command line: stats before anything is written, one-line errors."""

from conftest import write_sheet
from ngprecomputed.cli import main


def test_stats_lists_scales_files_and_jobs_without_writing(tmp_path, data, capsys):
    sheet = write_sheet(
        tmp_path / "s.csv",
        [
            {"dataset": "t1", "path": data["mni_t1"], "type": "image"},
            {"dataset": "aal", "path": data["aal"], "type": "segmentation"},
        ],
    )
    assert main(["stats", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "1000000_1000000_1000000" in out and "197x233x189" in out
    assert "(pyramid jobs)" in out and "aal" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_input_errors_are_one_line_and_exit_1(tmp_path, capsys):
    bad = tmp_path / "x.nii"
    bad.write_bytes(b"nonsense")
    code = main(["plan", str(bad), "--dataset", "x", "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    errors = [ln for ln in err if "error" in ln]  # nibabel's own reason follows, in brackets
    assert len(errors) == 1, err
    assert errors[0].startswith(
        f"ngprecomputed: error: dataset x: {bad}: nibabel cannot read it as NIfTI-1 ("
    ), errors
    assert not (tmp_path / "p.json").exists()


def test_stats_sizes_jobs_of_a_volume_known_by_its_shape(capsys):
    """A 20 um whole brain: thousands of jobs, each with the same bounded mem_mb."""
    assert main(["stats", "--shape", "6500", "7400", "5700", "--voxel-mm", "0.02"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    jobs = int(last.split("(pyramid jobs)")[1].split()[0])
    mem = int(last.split("mem_mb")[1].split(",")[0])
    n = 6500 * 7400 * 5700
    assert n // 2**27 <= jobs <= 2 * n // 2**27  # stage 0 alone needs n / voxels_per_job jobs
    assert mem < 1024
