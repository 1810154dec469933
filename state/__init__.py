"""The durable state: the store contract, its SQLite back-end, the names and the locks."""
