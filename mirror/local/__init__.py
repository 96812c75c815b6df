"""The site's own registry: pushes into the local namespace (`[local] prefix`), kept in
the same verified store as cached upstream content and never sent upstream."""
