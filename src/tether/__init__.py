"""tether: narrow credentials for machines you don't fully trust."""

__version__ = "0.1.0"
