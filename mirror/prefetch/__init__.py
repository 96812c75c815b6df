"""`mirror prefetch`: fill the cache with a list of images through the proxy service, with
no client, and show progress on a terminal."""
