"""Turn neuroimaging data into Neuroglancer precomputed datasets.

The package holds all the logic; the Snakemake workflow in ``workflow/`` only calls it.
"""

import os

# The package does no linear algebra worth a thread pool, and numpy's OpenBLAS starts one at
# import whose idle threads spin: ~60 ms of CPU per process here (the workflow, every job, every
# forked worker's parent), taken from the cores the conversion runs on. A user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
