"""Winnow: curate image-text datasets with CLIP scores and embeddings on Ray."""

__version__ = "0.1.0"
