"""The history of the gateway store's schema: one revision per file (see the parent package)."""
