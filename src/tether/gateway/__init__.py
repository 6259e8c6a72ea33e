"""The hub's gateway: an HTTP/1.1 reverse proxy that serves forwarded and sandboxed apps,
each at an origin of its own, after checking who may see them."""
