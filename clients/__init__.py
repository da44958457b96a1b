"""The device's deployable Flower app component and device profiles."""
