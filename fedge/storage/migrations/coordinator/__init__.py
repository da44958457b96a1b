"""The history of the coordinator store's schema: one revision per file (see the parent package)."""
