"""The manager's durable store (SQLAlchemy 2 async; SQLite by default)."""
