"""Faults of the machine answer in one line and leave nothing half-written: a disk that fills up
during a conversion (a real tmpfs of a few MB, mounted by the test as root), a read-only results
folder, a results folder without permission (Snakemake run as the user nobody), a busy port.
After the cause is fixed, a rerun equals a clean run byte for byte."""

import os
import shutil
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import ROOT, snakemake, write_sheet

pytestmark = pytest.mark.workflow


@contextmanager
def tmpfs(path: Path, options: str):
    """A real filesystem of its own (a size limit, or read-only); needs root, as CI runs."""
    assert os.geteuid() == 0, "these tests mount a tmpfs: run them as root (CI does)"
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file of a dataset, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_line_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ngprecomputed: error:")]


@pytest.mark.parametrize("sharded", [False, True], ids=["chunks", "shards"])
def test_full_disk_is_one_line_nothing_half_written_and_the_rerun_is_identical(
    tmp_path, data, sharded
):
    sheet = write_sheet(
        tmp_path / "s.csv",
        [{"dataset": "t1", "path": data["mni_t1"], "type": "image", "sharded": str(sharded)}],
    )
    args = ["--config", f"samples={sheet}", "qc=false", "voxels_per_job=2000000"]
    clean = tmp_path / "clean"
    snakemake(tmp_path, *args, f"results={clean}")
    with tmpfs(tmp_path / "small", "size=3m") as small:
        out = small / "out"
        proc = snakemake(tmp_path, *args, f"results={out}", check=False)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        errors = one_line_errors(proc.stderr)
        assert errors, proc.stderr[-3000:]
        assert all("dataset t1" in e and "no space left" in e for e in errors), errors
        assert not list(small.rglob("*.part")), "a half-written file was left behind"
        assert not (out / "t1" / "info").exists()
        subprocess.run(["mount", "-o", "remount,size=256m", str(small)], check=True)
        snakemake(tmp_path, *args, f"results={out}")
        assert tree(out / "t1") == tree(clean / "t1")


def test_read_only_results_stop_before_any_job(tmp_path, data):
    sheet = write_sheet(
        tmp_path / "s.csv", [{"dataset": "t1", "path": data["mni_t1"], "type": "image"}]
    )
    with tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        proc = snakemake(
            tmp_path, "--config", f"samples={sheet}", f"results={ro / 'out'}", check=False
        )
    assert proc.returncode != 0
    assert one_line_errors(proc.stderr) == [
        f"ngprecomputed: error: results folder {ro}: read-only file system: "
        "choose another results folder"
    ]
    assert "Traceback" not in proc.stderr


def test_results_without_permission_stop_before_any_job(tmp_path, data):
    """Run as nobody (root may write anywhere) in a folder nobody owns."""
    assert os.geteuid() == 0, "this test runs Snakemake as the user nobody: run it as root"
    base = tmp_path.parent / f"{tmp_path.name}-nobody"
    base.mkdir(mode=0o755)
    try:
        run = base / "run"
        run.mkdir()
        os.chown(run, 65534, 65534)
        locked = base / "locked"  # root's, 0755: nobody may not write in it
        locked.mkdir(mode=0o755)
        sheet = write_sheet(
            run / "s.csv", [{"dataset": "t1", "path": data["mni_t1"], "type": "image"}]
        )
        for parent in [tmp_path, *tmp_path.parents]:  # nobody must reach the folders
            if parent == Path(parent.anchor):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o005)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
            + ["-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1"]
            + ["--config", f"samples={sheet}", f"results={locked / 'out'}"],
            cwd=run,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HOME": str(run)},
        )
        assert proc.returncode != 0
        assert one_line_errors(proc.stderr) == [
            f"ngprecomputed: error: results folder {locked}: permission denied: "
            "make it writable, or choose another results folder"
        ], proc.stderr[-2000:]
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("command", ["view", "serve"])
def test_busy_port_is_one_line(tmp_path, command):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "info").write_text('{"type": "image", "scales": []}')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "ngprecomputed.cli", command, str(tmp_path)]
            + ["--port", str(port), "--host", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [
        f"ngprecomputed: error: port {port} on 127.0.0.1 is in use: choose another (--port)"
    ], proc.stderr
