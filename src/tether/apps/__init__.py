"""Apps: per-user sandboxed web apps served through the gateway (docs/apps.md)."""
