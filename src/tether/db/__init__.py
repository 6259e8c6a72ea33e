from tether.db.engine import Database

__all__ = ["Database"]
