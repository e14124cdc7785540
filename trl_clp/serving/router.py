"""The OpenAI-compatible routes, as vLLM's entrypoints: a module-level `router` whose handlers read the served model's
`CompletionService` and `ServerConfig` from `request.app.state`, and leave every piece of work to the service.
"""

from __future__ import annotations

import asyncio
import functools
import secrets

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from .errors import ERROR_RESPONSES, APIError
from .protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    Health,
    ModelList,
)

# The status a handler answers (to nobody) when its client left before the response: nginx's 499.
CLIENT_CLOSED_REQUEST = 499


async def check_api_key(request: Request) -> None:
    api_key = request.app.state.config.api_key
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), api_key.encode()):
        raise APIError(
            401,
            "Missing or wrong API key: send `Authorization: Bearer <key>`.",
            "authentication_error",
            "invalid_api_key",
        )


async def _client_disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the server's next message after the body)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def with_cancellation(handler):
    """Cancel `handler` as soon as its client disconnects (uvicorn does not), as vLLM's `with_cancellation`.

    The handler's own `finally` blocks release what it holds (the service drops the request's rows from the batch).
    A handler that returns a streaming response has returned before the stream starts: the stream watches for the
    disconnect itself.
    """

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        handling = asyncio.ensure_future(handler(*args, **kwargs))
        leaving = asyncio.ensure_future(_client_disconnected(kwargs["request"]))
        try:
            await asyncio.wait({handling, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (handling, leaving):
                if not task.done():
                    task.cancel()
            await asyncio.gather(handling, leaving, return_exceptions=True)
        if handling.cancelled():  # nobody is there to read a response
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return handling.result()

    return wrapper


router = APIRouter()


@router.get("/health", response_model=Health)
async def health(request: Request):
    batcher = request.app.state.batcher
    return Health(status="ok", queued=batcher.queued, batches=batcher.batches_run, rows=batcher.rows_run)


@router.get("/v1/models", dependencies=[Depends(check_api_key)], response_model=ModelList, responses=ERROR_RESPONSES)
async def models(request: Request):
    return request.app.state.service.model_list()


@router.post(
    "/v1/completions",
    dependencies=[Depends(check_api_key)],
    responses={
        200: {
            "model": CompletionResponse,
            "description": "The completions; with `stream: true`, server-sent events whose data are "
            "`CompletionChunk`s, then `[DONE]`.",
        },
        **ERROR_RESPONSES,
    },
)
@with_cancellation
async def completions(body: CompletionRequest, request: Request):
    return await request.app.state.service.completions(body)


@router.post(
    "/v1/chat/completions",
    dependencies=[Depends(check_api_key)],
    responses={
        200: {
            "model": ChatCompletionResponse,
            "description": "The chat completion; with `stream: true`, server-sent events whose data are "
            "`ChatCompletionChunk`s, then `[DONE]`.",
        },
        **ERROR_RESPONSES,
    },
)
@with_cancellation
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await request.app.state.service.chat_completions(body)
