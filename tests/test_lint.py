"""The project's standing checks: ruff, snakefmt and Snakemake's own linter."""

import subprocess
import sys

from conftest import ROOT


def run(*cmd):
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean():
    proc = run(sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "workflow")
    assert proc.returncode == 0, proc.stdout


def test_snakefmt_is_clean():
    proc = run(sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow")
    assert proc.returncode == 0, proc.stderr


def test_snakemake_lint_is_clean(tmp_path):
    """``snakemake --lint`` exits non-zero when it has anything to say."""
    proc = run(sys.executable, "-m", "snakemake", "--lint", "--config", f"results={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
