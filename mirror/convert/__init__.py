"""Conversion of cached OCI images into SIF files: layers merged as one stream, no tree on disk."""
