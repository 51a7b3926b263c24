"""One triangle mesh in memory: float32 vertices and uint32 triangles."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mesh:
    vertices: np.ndarray  # (N, 3) float32
    faces: np.ndarray  # (M, 3) uint32, indices into vertices

    def __post_init__(self):
        object.__setattr__(self, "vertices", np.ascontiguousarray(self.vertices, np.float32))
        object.__setattr__(self, "faces", np.ascontiguousarray(self.faces, np.uint32))

    def transformed(self, matrix) -> "Mesh":
        """The mesh under a 4x4 affine. A mirroring matrix (negative determinant) would turn the
        triangles inside out, so their winding is flipped to keep normals pointing outwards."""
        m = np.asarray(matrix, dtype=np.float64)
        v = self.vertices.astype(np.float64) @ m[:3, :3].T + m[:3, 3]
        faces = self.faces[:, ::-1] if np.linalg.det(m[:3, :3]) < 0 else self.faces
        return Mesh(v, faces)
