"""A fresh machine reproduces CI: the README's two commands, as written and in the README's order,
in a fresh clone and with Debian's own Python where there is one, install exactly the versions of
``constraints.txt``; the first converts the default sheet. (The second command's test run is this
suite: ``.ci/run`` is that command, on a clean clone.)"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.workflow


def readme_commands() -> list[str]:
    """The commands of the README's first code block."""
    block = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def pins(lines) -> dict[str, str]:
    """``name==version`` lines by normalised name."""
    out = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==", 1)
            out[name.lower().replace("_", "-").replace(".", "-")] = version
    return out


def test_ci_runs_exactly_the_readme_test_command():
    first, second = readme_commands()
    assert "snakemake --cores" in first and second.endswith("python -m pytest")
    assert second in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_commands_in_order_on_a_fresh_clone_install_what_ci_tested(tmp_path):
    python = Path("/usr/bin/python3")  # Debian's own, as most users meet it
    if not python.exists():
        python = Path(sys.base_prefix) / "bin" / "python3"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(python)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(bindir), "/usr/local/bin", "/usr/bin", "/bin"])
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
    first, second = readme_commands()

    proc = subprocess.run(
        ["bash", "-c", first], cwd=clone, env=env, capture_output=True, text=True, timeout=2400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(clone / "config" / "samples.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    for row in rows:
        name = row["dataset"]
        made = clone / "results" / name
        assert (made / "info").is_file() or (made / f"{name}.vtk").is_file(), name

    install = second.removesuffix(" && python -m pytest")  # the tests: this very suite
    proc = subprocess.run(
        ["bash", "-c", f"{install} && pip freeze --exclude-editable && python --version"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("Python 3."), lines[-1]
    assert pins(lines) == pins((ROOT / "constraints.txt").read_text().splitlines())
    shutil.rmtree(clone / ".venv")
