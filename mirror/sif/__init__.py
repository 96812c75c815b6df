"""Singularity Image Format: reading a SIF's header and descriptors (and, later, building
one from an OCI image)."""
