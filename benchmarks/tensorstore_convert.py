"""One NIfTI volume to a Neuroglancer precomputed pyramid with TensorStore (a benchmark peer).

    python benchmarks/tensorstore_convert.py SOURCE OUT [--labels] [--chunk 64]

What an expert would write in a few lines: nibabel reads the whole volume, TensorStore writes
scale 0 (raw, or compressed_segmentation for labels), then every coarser scale from
``ts.downsample`` of the scale above it (mean for images, mode for labels; factor 2 per axis)
until the volume fits one chunk. TensorStore's default concurrency (one thread per core). Every
chunk is written, all-zero ones too (TensorStore skips those by default; the other writers
do not, and a strict reader then finds them missing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import tensorstore as ts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--labels", action="store_true", help="segmentation: cseg, mode downsampling")
    p.add_argument("--chunk", type=int, default=64, help="chunk edge in voxels (default 64)")
    a = p.parse_args()

    img = nib.load(a.source)
    data = np.asanyarray(img.dataobj)
    if a.labels:
        data = data.astype(np.uint32)  # compressed_segmentation stores uint32 or uint64
    data = data.reshape(*data.shape[:3], -1)  # x, y, z, channel
    resolution = [float(z) * 1e6 for z in img.header.get_zooms()[:3]]  # mm -> nm
    encoding = {"encoding": "raw"}
    if a.labels:
        encoding = {
            "encoding": "compressed_segmentation",
            "compressed_segmentation_block_size": [8, 8, 8],
        }
    chunk = [a.chunk] * 3
    kvstore = f"file://{a.out.resolve()}"
    multiscale = {
        "type": "segmentation" if a.labels else "image",
        "data_type": data.dtype.name,
        "num_channels": data.shape[3],
    }

    def create(size: list[int]) -> ts.TensorStore:
        return ts.open(
            {
                "driver": "neuroglancer_precomputed",
                "kvstore": kvstore,
                # every chunk, background ones too (as the other writers): a complete dataset
                "store_data_equal_to_fill_value": True,
                "multiscale_metadata": multiscale,
                "scale_metadata": {
                    "key": "_".join(f"{r:.0f}" for r in resolution),
                    "size": size,
                    "resolution": resolution,
                    "chunk_size": chunk,
                    **encoding,
                },
            },
            create=True,
        ).result()

    store = create(list(data.shape[:3]))
    store.write(data).result()
    del data
    method = "mode" if a.labels else "mean"
    while any(n > c for n, c in zip(store.shape[:3], chunk, strict=True)):
        coarser = ts.downsample(store, [2, 2, 2, 1], method)
        resolution = [r * 2 for r in resolution]
        store = create(list(coarser.shape[:3]))
        store.write(coarser).result()


if __name__ == "__main__":
    main()
