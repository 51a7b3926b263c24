"""What the workflow does to Snakemake's own process (ngprecomputed.job): pandas kept out of it
once the DAG is built, so that Snakemake's check of a script job's params does not import it."""

import subprocess
import sys
import textwrap

# A script job's object as Snakemake's local executor builds it (and pickles it into the
# script's preamble), in a process where nothing has imported pandas.
SCRIPT_JOB = """
import importlib.util, pickle, sys
from ngprecomputed.job import keep_pandas_out
{before}
keep_pandas_out()
from snakemake.iocontainers import (
    InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards,
)
params = Params(fromdict={{"works": [{{"dataset": "t1", "slabs": [0, 1]}}]}})
job = Snakemake(
    InputFiles(["in.nii.gz"]), OutputFiles(["info"]), params, Wildcards(), 2,
    ResourceList(), Log(["job.log"]), {{}}, "volume", None,
)
print(pickle.loads(pickle.dumps(job)).params.works)
print(sys.modules.get("pandas") is not None, importlib.util.find_spec("pandas") is not None)
"""


def run(before: str = "") -> list[str]:
    code = textwrap.dedent(SCRIPT_JOB.format(before=before))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_a_script_job_is_built_without_importing_pandas():
    works, loaded = run()
    assert works == "[{'dataset': 't1', 'slabs': [0, 1]}]"
    assert loaded == "False False"  # nor does Snakemake's metadata (find_spec) look for it


def test_pandas_already_loaded_stays_loaded():
    works, loaded = run(before="import pandas")
    assert works == "[{'dataset': 't1', 'slabs': [0, 1]}]"
    assert loaded == "True True"
