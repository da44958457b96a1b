"""The coordinator's deployable Flower app component."""
