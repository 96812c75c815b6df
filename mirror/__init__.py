"""hpc-mirror: a pull-through cache for OCI registries, with a static catalog."""

__version__ = "0.1.0"
