"""Annotations: points, electrodes and tractography as precomputed annotation collections."""
