"""The pull-through proxy: HTTP handlers, the service's decisions (tags, manifests, blob
fills), routing of names to upstreams, and the upstream registry client."""
