"""Model registry: the teachers the fleet trains and the small students releases ship."""

from fedge.models import cnn, students  # noqa: F401  (registers the models)
from fedge.models.registry import ModelInfo, get_model, list_models, model_info, register_model

__all__ = ["ModelInfo", "get_model", "list_models", "model_info", "register_model"]
