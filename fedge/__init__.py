"""fedge: hybrid edge-cloud federated learning.

Edge devices keep their raw data and train with differential privacy; a coordinator aggregates
their updates, distils and int8-quantizes the global model and ships it back as a signed release.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
