"""Detector models, built by name: `create_model("fast" | "full", img_size=...)`."""

from fakedet.models import detector as _detector  # noqa: F401  (registers the builders)
from fakedet.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
