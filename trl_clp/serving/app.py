"""An OpenAI-compatible HTTP server for a steerable model: the app, its limits and how it runs (uvicorn).

    trl-clp serve outputs/clp-demo --port 8000

Endpoints: `POST /v1/completions`, `POST /v1/chat/completions` (both with `stream`), `GET /v1/models`, `GET /health`.
A request picks its trade-off with the extra body field `weights` (and `kl_weight`); see docs/serving.md.

The event loop only routes: tokenizing and chat templating run on one preprocessing thread (so one huge prompt cannot
delay `/health` or other responses), generation on the batcher's worker thread, and a body over `max_request_bytes`
is answered 413 before it is read to the end (what still arrives is drained, within bounds, so that the client reads
the answer). The routes are in `router.py`, the work behind them in `service.py`, request and response models in
`protocol.py`, errors in `errors.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ..conditioning.paths import resolve_clp_file
from ..conditioning.steerable import SteerableModel
from .batcher import RequestBatcher
from .errors import APIError, error_response, internal_error_message
from .router import check_api_key, router
from .service import CompletionService

API_KEY_ENV = "TRL_CLP_API_KEY"
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


# After a 413, what still arrives of the body is read and dropped, up to this many bytes for this many seconds,
# before the connection closes: a client that sends its whole body before it reads the answer (urllib, requests)
# would otherwise have the connection reset under it and never read the 413. Past the bound the connection closes.
DRAIN_MAX_BYTES = 64 << 20
DRAIN_MAX_SECONDS = 10.0


class RequestSizeLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 as soon as it is known to be too large (from
    its Content-Length header, else while it arrives), before the app reads it to the end or parses it.

    The 413 is sent at once, then the connection closes lingeringly: the rest of the body is drained (discarded, up
    to `DRAIN_MAX_BYTES` and `DRAIN_MAX_SECONDS`) so that a client still sending reads the answer, not a reset. A body
    within the limit is read here and handed to the app whole; later `receive` calls (disconnect checks) go to the
    server.
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
        # The rest of the body is never parsed, so the connection cannot carry another request.
        response = error_response(413, message, code="request_too_large", headers={"Connection": "close"})
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        # The whole answer goes out now (its Content-Length frames it); the response stays open while the body drains,
        # since the server closes the connection once it ends.
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        await _drain_body(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drain_body(receive) -> None:
    """Read and drop the rest of a request body until it ends, the client leaves, or the drain bounds are reached."""
    loop = asyncio.get_running_loop()
    deadline, drained = loop.time() + DRAIN_MAX_SECONDS, 0
    while drained <= DRAIN_MAX_BYTES:
        try:
            message = await asyncio.wait_for(receive(), timeout=max(deadline - loop.time(), 0))
        except TimeoutError:
            return
        if message["type"] != "http.request":  # the client left (e.g. it read the 413 and closed)
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


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
    """The FastAPI app serving `steer`: the routes of `router.py` over one `CompletionService`, whose generation
    worker and preprocessing thread start and stop with the app (lifespan)."""
    config = config or ServerConfig()
    if steer.tokenizer is None:
        raise ValueError("Serving needs the model's tokenizer: save it beside the adapter or pass `tokenizer=`.")
    batcher = RequestBatcher(
        steer, steer.tokenizer, config.max_batch_size, config.max_queue_size, config.batch_wait_ms / 1000
    )
    service = CompletionService(steer, config, batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # One thread owns the server's tokenizer (a fast tokenizer used from two threads can raise "Already borrowed").
        service.preprocessing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trl-clp-tokenize")
        batcher.start()
        try:
            yield
        finally:
            service.preprocessing.shutdown(wait=False, cancel_futures=True)
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
    app.state.service = service
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    if protected:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(check_api_key)])
        async def openapi():
            return app.openapi()

    app.include_router(router)
    return app


async def _api_error(request: Request, error: APIError):
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return error_response(error.status, error.message, error.type, error.code, headers)


async def _invalid(request: Request, error: RequestValidationError):
    return error_response(400, _validation_message(error))


async def _http_error(request: Request, error: HTTPException):
    return error_response(error.status_code, str(error.detail), "invalid_request_error")


async def _unexpected(request: Request, error: Exception):
    request_id = f"req-{uuid.uuid4().hex}"
    logger.error("Request %s (%s %s) failed", request_id, request.method, request.url.path, exc_info=error)
    return error_response(500, internal_error_message(request_id), "server_error")


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
