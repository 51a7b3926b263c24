"""A volume known by its header alone: what ``ngprecomputed stats --shape`` plans for sizing
jobs (a 1 TB volume need not exist to count its jobs)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class HeaderOnly:
    shape: tuple[int, int, int, int]  # x, y, z, channels
    source_dtype: np.dtype
    voxel_mm: tuple[float, float, float]
    scaled: bool = False
    unit_nm: float = 1e6

    @property
    def path(self) -> Path:
        return Path("x".join(map(str, self.shape[:3])))

    @property
    def affine(self) -> np.ndarray:
        return np.diag([*self.voxel_mm, 1.0])

    @property
    def voxel_size_nm(self) -> tuple[float, float, float]:
        return tuple(float(v) * self.unit_nm for v in self.voxel_mm)
