"""The site's own registry: images pushed into the local namespace (`[local] prefix`), kept
in the same store as cached upstream content and never sent upstream."""
