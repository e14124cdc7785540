"""An OpenAI-compatible HTTP server for a steerable model: FastAPI routes over `RequestBatcher`, run by uvicorn.

    trl-clp serve outputs/clp-demo --port 8000

Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (both with `stream`), `GET /v1/models`, `GET /health`.
A request picks its trade-off with the extra body field `weights` (and `kl_weight`); see docs/serving.md.

The event loop only routes: tokenizing and chat templating run on one preprocessing thread (so one huge prompt cannot
delay `/health` or other responses), generation on the batcher's worker thread, and a body over `max_request_bytes`
is answered 413 before it is read to the end.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jinja2 import TemplateError
from starlette.exceptions import HTTPException

from ..conditioning.paths import resolve_clp_file
from ..conditioning.prompts import format_weighted_prompt
from ..conditioning.steerable import SteerableModel
from .batcher import GenerationRequest, QueueFullError, RequestBatcher, SamplingKey
from .protocol import (
    AssistantMessage,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ErrorInfo,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    Usage,
    conditioning_for,
    resolve_weighting,
)

API_KEY_ENV = "TRL_CLP_API_KEY"
# The OpenAI completions API's default `max_tokens`; chat completions default to the server's cap.
DEFAULT_COMPLETION_TOKENS = 16
# How often a non-streaming request checks that its client is still connected, and the status its handler returns
# (nginx's 499) when the client left before the response.
DISCONNECT_POLL_S = 0.05
CLIENT_CLOSED_REQUEST = 499
logger = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    """How the server batches and bounds requests. Host and port are `serve`'s arguments."""

    model_name: str = field(
        default="trl-clp", metadata={"help": "Model id clients send in `model` and see in /v1/models."}
    )
    api_key: str | None = field(
        default=None,
        metadata={"help": f"Bearer token required on /v1/*; None disables the check (`serve` reads ${API_KEY_ENV})."},
    )
    max_batch_size: int = field(default=32, metadata={"help": "Most requests decoded together in one batch."})
    max_queue_size: int = field(
        default=256, metadata={"help": "Requests waiting for a batch; past it the server answers 503."}
    )
    max_new_tokens: int = field(default=256, metadata={"help": "Largest `max_tokens` a request may ask for."})
    batch_wait_ms: float = field(
        default=10.0,
        metadata={"help": "An idle worker gathers a batch until no request came for this long (10 times it at most)."},
    )
    max_request_bytes: int = field(
        default=1 << 20,
        metadata={
            "help": "Largest request body in bytes (default 1 MiB); a larger one is answered 413 before it is read "
            "to the end or parsed."
        },
    )

    def __post_init__(self):
        for name in ("max_batch_size", "max_queue_size", "max_new_tokens", "max_request_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.batch_wait_ms < 0:
            raise ValueError(f"`batch_wait_ms` must be >= 0, got {self.batch_wait_ms}.")


class APIError(Exception):
    """An error answered as OpenAI-style JSON: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type, code


def _error_body(message: str, type: str = "invalid_request_error", code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorInfo(message=message, type=type, param=None, code=code)).model_dump()


def _error_response(status: int, message: str, type: str = "invalid_request_error", code=None, headers=None):
    return JSONResponse(_error_body(message, type, code), status_code=status, headers=headers)


# The errors every `/v1` route may answer, shown with their shape in the OpenAPI schema (`/docs`).
ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in (
        (400, "Invalid request: the message says which field to fix."),
        (401, "Missing or wrong API key."),
        (404, "Unknown model."),
        (413, "Request body too large."),
        (500, "Internal error: the message gives the request id to find in the server log."),
        (503, "Queue full: retry after the `Retry-After` seconds."),
    )
}


def _internal_error_message(request_id: str) -> str:
    # Exception text can hold file paths, device and driver details: it goes to the server log, not to clients.
    return f"Internal server error (request {request_id}): the server log has the details."


class RequestSizeLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 as soon as it is known to be too large (from
    its Content-Length header, else while it arrives), before the app reads it to the end or parses it.

    A body within the limit is read here and handed to the app whole; later `receive` calls (disconnect checks) go
    to the server.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending its body: nobody to answer
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        message = (
            f"The request body is larger than this server's limit of {self.max_bytes} bytes: send a shorter "
            f"request, or start the server with a larger `--max-request-bytes`."
        )
        # The rest of the body is never read, so the connection cannot carry another request.
        response = _error_response(413, message, code="request_too_large", headers={"Connection": "close"})
        await response(scope, receive, send)


def _validation_message(error: RequestValidationError) -> str:
    messages = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part != "body")
        if item["type"] == "json_invalid":
            return f"The request body is not valid JSON ({item.get('ctx', {}).get('error', 'parse error')}): send a JSON object."
        if item["type"] == "extra_forbidden":
            messages.append(
                f"Unsupported parameter `{location}`: remove it (GET /openapi.json lists the accepted fields)."
            )
        elif item["type"] == "missing":
            messages.append(f"Missing required field `{location}`.")
        else:
            message = item["msg"].removeprefix("Value error, ")
            messages.append(message if not location else f"`{location}`: {message}")
    return " ".join(dict.fromkeys(messages))


def _emit(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, event: tuple) -> None:
    """Hand an event from the worker thread to the request's coroutine (dropped if the server loop has closed)."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(events.put_nowait, event)


def load_steerable_model(
    path: str,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    chat_template: str | None = None,
    base_model: str | None = None,
) -> SteerableModel:
    """Load a saved CLP model for serving: safetensors only, no remote code unless `trust_remote_code`.

    Args:
        path: directory (or hub id) written by `MultiObjectiveTrainer.save_model`, with the tokenizer.
        device: default `"cuda"` when available, else `"cpu"`.
        dtype: e.g. `"bfloat16"`; default the checkpoint's.
        chat_template: a Jinja chat template (file path or the template itself) for tokenizers without one.
        base_model: the base model's folder or hub id; default the one the adapter records.

    Raises:
        ValueError: no `adapter_model.safetensors` (a pickled adapter is never loaded), or no tokenizer.
    """
    import torch
    from transformers import AutoTokenizer

    try:
        resolve_clp_file(path, "adapter_model.safetensors")
    except Exception as error:
        raise ValueError(
            f"{path!r} has no adapter_model.safetensors: the server loads safetensors only (pickled .bin files can run "
            f"code). Re-save the adapter with `save_pretrained(..., safe_serialization=True)`."
        ) from error
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model_kwargs = {"use_safetensors": True, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        model_kwargs["dtype"] = getattr(torch, dtype)
    steer = SteerableModel.from_pretrained(path, base_model=base_model, tokenizer=tokenizer, **model_kwargs)
    if chat_template is not None:
        if os.path.isfile(chat_template):
            with open(chat_template) as handle:
                chat_template = handle.read()
        steer.tokenizer.chat_template = chat_template
    return steer.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def create_app(steer: SteerableModel, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app serving `steer`. Its generation worker starts and stops with the app (lifespan)."""
    config = config or ServerConfig()
    tokenizer = steer.tokenizer
    if tokenizer is None:
        raise ValueError("Serving needs the model's tokenizer: save it beside the adapter or pass `tokenizer=`.")
    batcher = RequestBatcher(
        steer, tokenizer, config.max_batch_size, config.max_queue_size, config.batch_wait_ms / 1000
    )
    names = steer.objective_names
    context_length = batcher.context_length
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One thread owns the server's tokenizer (a fast tokenizer used from two threads can raise "Already borrowed").
        app.state.preprocessing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trl-clp-tokenize")
        batcher.start()
        try:
            yield
        finally:
            app.state.preprocessing.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(batcher.close)

    # With an API key, the schema is served only with the key (below) and the browser pages are off: a browser
    # cannot send the key with the page's own request for the schema.
    protected = config.api_key is not None
    app = FastAPI(
        title="trl-clp",
        description="OpenAI-compatible server for a steerable (CLP) model.",
        lifespan=lifespan,
        openapi_url=None if protected else "/openapi.json",
        docs_url=None if protected else "/docs",
        redoc_url=None if protected else "/redoc",
    )
    app.add_middleware(RequestSizeLimit, max_bytes=config.max_request_bytes)
    app.state.batcher = batcher
    app.state.steer = steer
    app.state.config = config

    @app.exception_handler(APIError)
    async def _api_error(request: Request, error: APIError):
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return _error_response(error.status, error.message, error.type, error.code, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        return _error_response(400, _validation_message(error))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException):
        return _error_response(error.status_code, str(error.detail), "invalid_request_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        request_id = f"req-{uuid.uuid4().hex}"
        logger.error("Request %s (%s %s) failed", request_id, request.method, request.url.path, exc_info=error)
        return _error_response(500, _internal_error_message(request_id), "server_error")

    async def check_api_key(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), config.api_key.encode()):
            raise APIError(
                401,
                "Missing or wrong API key: send `Authorization: Bearer <key>`.",
                "authentication_error",
                "invalid_api_key",
            )

    def check_model(body) -> None:
        if body.model != config.model_name:
            raise APIError(
                404,
                f"The model `{body.model}` does not exist: this server serves `{config.model_name}`.",
                code="model_not_found",
            )

    def prepare(body, prompts: list, chat: bool) -> tuple:
        """Validate the weighting and limits and tokenize each prompt (on the preprocessing thread: CPU-bound).

        Returns the conditioning vector, the weighting, and each prompt's `(prompt_ids, max_new_tokens)`.
        """
        try:
            weighting = resolve_weighting(body.weights, names)
            conditioning = conditioning_for(steer, weighting, body.kl_weight)
        except ValueError as error:
            raise APIError(400, str(error)) from None
        requested = body.max_tokens if not chat else (body.max_completion_tokens or body.max_tokens)
        if requested is not None and requested > config.max_new_tokens:
            raise APIError(
                400,
                f"`max_tokens={requested}` exceeds this server's limit of {config.max_new_tokens}: "
                f"ask for fewer tokens.",
            )
        rows = []
        for prompt in prompts:
            if (
                steer.conditioning_config.conditioning == "prompt"
            ):  # the prompting baseline reads its weighting as text
                try:
                    prompt = format_weighted_prompt(
                        prompt, weighting, names, steer.conditioning_config.prompt_template
                    )
                except ValueError as error:  # a conversation without a user message to carry the weighting
                    raise APIError(400, str(error)) from None
            if chat:
                if not tokenizer.chat_template:
                    raise APIError(
                        400,
                        "This model's tokenizer has no chat template: use /v1/completions, or start "
                        "the server with `--chat-template FILE`.",
                    )
                try:
                    text = tokenizer.apply_chat_template(
                        prompt,
                        tokenize=False,
                        add_generation_prompt=True,
                        **(steer.conditioning_config.chat_template_kwargs or {}),
                    )
                except TemplateError as error:  # the template's own check (e.g. roles must alternate)
                    raise APIError(400, f"The chat template cannot render these messages: {error}") from None
                prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                prompt_ids = tokenizer(prompt)["input_ids"]
            if not prompt_ids:
                raise APIError(400, "The prompt is empty: send at least one token of text.")
            room = context_length - len(prompt_ids)
            if room < 1:
                raise APIError(
                    400,
                    f"The prompt has {len(prompt_ids)} tokens, but this model's context is {context_length} tokens, "
                    f"prompt and completion together: shorten the prompt.",
                )
            max_new_tokens = requested or (DEFAULT_COMPLETION_TOKENS if not chat else min(config.max_new_tokens, room))
            if max_new_tokens > room:
                raise APIError(
                    400,
                    f"The prompt has {len(prompt_ids)} tokens and max_tokens is {max_new_tokens}, but "
                    f"this model's context is {context_length} tokens: shorten the prompt or lower "
                    f"max_tokens.",
                )
            rows.append((prompt_ids, max_new_tokens))
        return conditioning, weighting, rows

    async def build_requests(
        body, prompts: list, chat: bool, request_id: str, http_request: Request
    ) -> tuple[list[GenerationRequest], list, dict]:
        """The queued requests of one HTTP request, their event queues, and the weighting shown in the response."""
        loop = asyncio.get_running_loop()
        conditioning, weighting, rows = await loop.run_in_executor(
            http_request.app.state.preprocessing, prepare, body, prompts, chat
        )
        sampling = SamplingKey(body.temperature, body.top_p if body.temperature > 0 else 1.0)
        queues, requests = [], []
        for prompt_ids, max_new_tokens in rows:
            events: asyncio.Queue = asyncio.Queue()
            requests.append(
                GenerationRequest(
                    prompt_ids,
                    conditioning,
                    max_new_tokens,
                    sampling,
                    emit=functools.partial(_emit, loop, events),
                    stop=body.stop_strings,
                    stream=body.stream,
                    request_id=request_id,
                )
            )
            queues.append(events)
        shown = {"weights": dict(zip(names, weighting, strict=True))}
        if steer.conditioning_config.min_kl_weight is not None:
            shown["kl_weight"] = (
                body.kl_weight if body.kl_weight is not None else steer.conditioning_config.min_kl_weight
            )
        return requests, queues, shown

    def submit(requests: list[GenerationRequest]) -> None:
        try:
            batcher.submit(requests)
        except QueueFullError as error:
            raise APIError(503, str(error), "server_overloaded", "queue_full") from None

    async def wait_done(events: asyncio.Queue, request_id: str):
        while True:
            kind, value = await events.get()
            if kind == "done":
                return value
            if kind == "error":  # the worker logged it with the request's id
                raise APIError(500, _internal_error_message(request_id), "server_error")

    def usage(results) -> Usage:
        prompt = sum(r.prompt_tokens for r in results)
        completion = sum(len(r.token_ids) for r in results)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    async def wait_all_unless_disconnected(queues, request_id: str, http_request: Request):
        """Every row's result; None as soon as the client has gone away (uvicorn does not cancel the handler)."""
        gathered = asyncio.ensure_future(asyncio.gather(*(wait_done(events, request_id) for events in queues)))
        try:
            while True:
                done, _ = await asyncio.wait({gathered}, timeout=DISCONNECT_POLL_S)
                if done:
                    return gathered.result()
                if await http_request.is_disconnected():
                    return None
        finally:
            gathered.cancel()
            await asyncio.gather(gathered, return_exceptions=True)  # retrieves the cancellation: nothing logged

    async def run(requests, queues, make_chunk, make_response, response_id: str, http_request: Request):
        """Non-streaming: wait for every row. Streaming: server-sent events, one chunk per text delta."""
        submit(requests)
        if not requests[0].stream:
            try:
                results = await wait_all_unless_disconnected(queues, response_id, http_request)
            finally:
                for request in requests:  # done, failed or abandoned: the worker drops rows still running
                    request.cancelled.set()
            if results is None:  # nobody is there to read a response
                return Response(status_code=CLIENT_CLOSED_REQUEST)
            return make_response(response_id, results)

        async def events_stream():
            try:
                for index, (_request, events) in enumerate(zip(requests, queues, strict=True)):
                    yield f"data: {json.dumps(make_chunk(response_id, index, text='', first=True))}\n\n"
                    while True:
                        kind, value = await events.get()
                        if kind == "delta":
                            yield f"data: {json.dumps(make_chunk(response_id, index, text=value))}\n\n"
                        elif kind == "done":
                            chunk = make_chunk(response_id, index, text="", finish_reason=value.finish_reason)
                            yield f"data: {json.dumps(chunk)}\n\n"
                            break
                        else:  # the worker logged it with the request's id
                            error = _error_body(_internal_error_message(response_id), "server_error")
                            yield f"data: {json.dumps(error)}\n\n"
                            return
                yield "data: [DONE]\n\n"
            finally:
                for request in requests:
                    request.cancelled.set()

        return StreamingResponse(events_stream(), media_type="text/event-stream")

    if protected:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(check_api_key)])
        async def openapi():
            return app.openapi()

    @app.get("/health", response_model=Health)
    async def health():
        return Health(status="ok", queued=batcher.queued, batches=batcher.batches_run, rows=batcher.rows_run)

    @app.get("/v1/models", dependencies=[Depends(check_api_key)], response_model=ModelList, responses=ERROR_RESPONSES)
    async def models():
        card = ModelCard(
            id=config.model_name,
            object="model",
            created=created,
            owned_by="trl-clp",
            objectives=names,
            conditioning=steer.conditioning_config.conditioning,
            max_model_len=context_length,
            kl_conditioning=steer.conditioning_config.min_kl_weight is not None,
        )
        return ModelList(object="list", data=[card])

    @app.post(
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
    async def completions(body: CompletionRequest, http_request: Request):
        check_model(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not 1 <= len(prompts) <= config.max_batch_size:
            raise APIError(400, f"`prompt` takes a string or a list of 1 to {config.max_batch_size} strings.")
        response_id = f"cmpl-{uuid.uuid4().hex}"
        requests, queues, shown = await build_requests(body, prompts, False, response_id, http_request)

        def chunk(response_id, index, text, first=False, finish_reason=None):
            choice = CompletionChoice(index=index, text=text, logprobs=None, finish_reason=finish_reason)
            return CompletionChunk(
                id=response_id,
                object="text_completion",
                created=int(time.time()),
                model=config.model_name,
                choices=[choice],
                **shown,
            ).model_dump(exclude_unset=True)

        def response(response_id, results):
            choices = [
                CompletionChoice(index=index, text=r.text, logprobs=None, finish_reason=r.finish_reason)
                for index, r in enumerate(results)
            ]
            return CompletionResponse(
                id=response_id,
                object="text_completion",
                created=int(time.time()),
                model=config.model_name,
                choices=choices,
                usage=usage(results),
                **shown,
            ).model_dump(exclude_unset=True)

        return await run(requests, queues, chunk, response, response_id, http_request)

    @app.post(
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
    async def chat_completions(body: ChatCompletionRequest, http_request: Request):
        check_model(body)
        messages = [message.model_dump(exclude_none=True) for message in body.messages]
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        requests, queues, shown = await build_requests(body, [messages], True, response_id, http_request)

        def chunk(response_id, index, text, first=False, finish_reason=None):
            delta = (
                ChatDelta(role="assistant", content=text)
                if first
                else ChatDelta(content=text)
                if text
                else ChatDelta()
            )
            choice = ChatCompletionChunkChoice(index=index, delta=delta, logprobs=None, finish_reason=finish_reason)
            return ChatCompletionChunk(
                id=response_id,
                object="chat.completion.chunk",
                created=int(time.time()),
                model=config.model_name,
                choices=[choice],
                **shown,
            ).model_dump(exclude_unset=True)

        def response(response_id, results):
            (result,) = results
            choice = ChatCompletionChoice(
                index=0,
                message=AssistantMessage(role="assistant", content=result.text),
                logprobs=None,
                finish_reason=result.finish_reason,
            )
            return ChatCompletionResponse(
                id=response_id,
                object="chat.completion",
                created=int(time.time()),
                model=config.model_name,
                choices=[choice],
                usage=usage(results),
                **shown,
            ).model_dump(exclude_unset=True)

        return await run(requests, queues, chunk, response, response_id, http_request)

    return app


def serve(
    path: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    chat_template: str | None = None,
    log_level: str = "info",
    base_model: str | None = None,
    **config_kwargs,
) -> None:
    """Load the model at `path` and serve it until interrupted (the `trl-clp serve` command).

    `config_kwargs` are `ServerConfig` fields; `api_key` defaults to the environment variable `TRL_CLP_API_KEY`
    and `model_name` to the folder's name; `base_model` replaces the base model the adapter records.
    """
    import uvicorn

    config_kwargs.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
    config_kwargs.setdefault("model_name", os.path.basename(os.path.normpath(path)))
    config = ServerConfig(**config_kwargs)
    steer = load_steerable_model(path, device, dtype, trust_remote_code, chat_template, base_model)
    uvicorn.run(create_app(steer, config), host=host, port=port, log_level=log_level)


class ServerThread:
    """Run an app with uvicorn in a background thread on a free loopback port (tests, notebooks).

    ```python
    with ServerThread(create_app(steer)) as server:  # or server = ServerThread(...).start(); ...; server.stop()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    ```
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host, self.port = self.socket.getsockname()
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        """Start serving; returns once the server accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The server did not start.")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop the server (requests in progress finish first, within 5 s) and its generation worker."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
