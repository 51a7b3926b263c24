"""Triangle meshes: read from neuroimaging and common mesh files, generated from label volumes,
written as Neuroglancer legacy or multi-resolution meshes."""
