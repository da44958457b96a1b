"""The history of the release store's schema: one revision per file (see the parent package)."""
