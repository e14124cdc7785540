"""Serving a steerable model over HTTP: OpenAI-compatible routes (`app`), request models (`protocol`) and the
worker that batches requests with different weightings into one generation (`batcher`). Needs `pip install
trl-clp[serve]`."""

from .app import API_KEY_ENV, ServerConfig, ServerThread, create_app, load_steerable_model, serve
from .batcher import GenerationRequest, GenerationResult, QueueFullError, RequestBatcher, SamplingKey
from .protocol import resolve_weighting

__all__ = [
    "API_KEY_ENV",
    "GenerationRequest",
    "GenerationResult",
    "QueueFullError",
    "RequestBatcher",
    "SamplingKey",
    "ServerConfig",
    "ServerThread",
    "create_app",
    "load_steerable_model",
    "resolve_weighting",
    "serve",
]
