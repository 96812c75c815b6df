"""The site's own registry: pushes into the local namespace (`[local]`), kept in the same
verified store as cached upstream images."""
