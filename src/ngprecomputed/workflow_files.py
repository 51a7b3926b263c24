"""Where the Snakemake workflow's own files are: the repository, or the installed package.

A wheel carries the workflow (Snakefile, rules, schemas, config, profiles) as data files under
``<prefix>/share/ngprecomputed/``; a source checkout has them at its top.
"""

import os
import sys
import sysconfig
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2]
_INSTALLED = Path(sysconfig.get_path("data")) / "share" / "ngprecomputed"


def workflow_root() -> Path:
    """The folder holding ``Snakefile``, ``workflow/``, ``config/`` and ``profiles/``."""
    for root in (_CHECKOUT, _INSTALLED):
        if (root / "Snakefile").is_file() and (root / "workflow" / "schemas").is_dir():
            return root
    raise FileNotFoundError(
        f"the ngprecomputed workflow is neither in {_CHECKOUT} nor in {_INSTALLED}"
    )


def put_environment_first() -> None:
    """Jobs run the ``ngprecomputed`` of the environment Snakemake runs in, activated or not
    (``.venv/bin/snakemake`` without ``activate``): its ``bin`` goes first on ``PATH``."""
    here = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([here, os.environ.get("PATH", os.defpath)])


def run_workflow(sheet: Path, results, extra: list[str]) -> int:
    """The packaged workflow on ``sheet`` into ``results`` (``extra``: Snakemake's own
    arguments), on all cores with the local profile unless told otherwise; its exit status."""
    import subprocess

    root = workflow_root()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile")]
    # A profile (profiles/slurm) sets its own cores.
    sized = ("--cores", "-c", "-j", "--jobs", "--profile", "--workflow-profile")
    if not any(x in extra for x in sized):
        cmd += ["--cores", "all"]
    if "--workflow-profile" not in extra:
        cmd += ["--workflow-profile", str(root / "profiles" / "local")]
    cmd += [*extra, "--config", f"samples={Path(sheet).resolve()}", f"results={results}"]
    return subprocess.call(cmd)
