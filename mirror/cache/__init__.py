"""What the mirror holds: the content store on the cluster filesystem (the only module
that knows its layout), the node-local metadata cache and pull statistics (`open_cache`
opens all three), and the commands that maintain the cache (gc, verify, bundles, the SIF
tree)."""
