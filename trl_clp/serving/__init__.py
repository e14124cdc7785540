"""Serving a steerable model over HTTP: OpenAI-compatible routes (`app`), request models (`protocol`) and the
worker that batches requests with different weightings into one generation (`batcher`). Needs `pip install
trl-clp[serve]`."""

from ..extras import require

# Both checked before anything loads: `trl-clp serve` says how to install them instead of failing on an import.
require("fastapi", "serve", "the HTTP server (`trl-clp serve`)")
require("uvicorn", "serve", "the HTTP server (`trl-clp serve`)")

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
