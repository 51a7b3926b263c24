"""Turn neuroimaging data into Neuroglancer precomputed datasets.

The package holds all the logic; the Snakemake workflow in ``workflow/`` only calls it.
"""

__version__ = "0.1.0"
