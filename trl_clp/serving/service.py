"""`CompletionService`: the work behind the OpenAI-compatible routes, one object per served model.

It checks and tokenizes a request (on the preprocessing thread), queues its rows on the `RequestBatcher`, and answers
with the response models of `protocol.py`, whole or as server-sent events; the routes (`router.py`) only call it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi.responses import StreamingResponse
from jinja2 import TemplateError

from ..conditioning.prompts import format_weighted_prompt
from ..conditioning.steerable import SteerableModel
from .batcher import GenerationRequest, QueueFullError, RequestBatcher, SamplingKey
from .errors import APIError, error_body, internal_error_message
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
    ModelCard,
    ModelList,
    Usage,
    conditioning_for,
    resolve_weighting,
)

# The OpenAI completions API's default `max_tokens`; chat completions default to the server's cap.
DEFAULT_COMPLETION_TOKENS = 16


def _emit(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, event: tuple) -> None:
    """Hand an event from the worker thread to the request's coroutine (dropped if the server loop has closed)."""
    if not loop.is_closed():
        loop.call_soon_threadsafe(events.put_nowait, event)


class CompletionService:
    """Completions and chat completions of `steer`, batched by `batcher`, within the limits of `config`.

    `preprocessing` is the one thread that owns the tokenizer (a fast tokenizer used from two threads can raise
    "Already borrowed"); the app's lifespan starts and stops it.
    """

    def __init__(self, steer: SteerableModel, config, batcher: RequestBatcher):
        self.steer, self.config, self.batcher = steer, config, batcher
        self.tokenizer = steer.tokenizer
        self.names = steer.objective_names
        self.context_length = batcher.context_length
        self.created = int(time.time())
        self.preprocessing: ThreadPoolExecutor | None = None

    def check_model(self, body) -> None:
        if body.model != self.config.model_name:
            raise APIError(
                404,
                f"The model `{body.model}` does not exist: this server serves `{self.config.model_name}`.",
                code="model_not_found",
            )

    def prepare(self, body, prompts: list, chat: bool) -> tuple:
        """Validate the weighting and limits and tokenize each prompt (on the preprocessing thread: CPU-bound).

        Returns the conditioning vector, the weighting, and each prompt's `(prompt_ids, max_new_tokens)`.
        """
        try:
            weighting = resolve_weighting(body.weights, self.names)
            conditioning = conditioning_for(self.steer, weighting, body.kl_weight)
        except ValueError as error:
            raise APIError(400, str(error)) from None
        requested = body.max_tokens if not chat else (body.max_completion_tokens or body.max_tokens)
        if requested is not None and requested > self.config.max_new_tokens:
            raise APIError(
                400,
                f"`max_tokens={requested}` exceeds this server's limit of {self.config.max_new_tokens}: "
                f"ask for fewer tokens.",
            )
        rows = []
        for prompt in prompts:
            if (
                self.steer.conditioning_config.conditioning == "prompt"
            ):  # the prompting baseline reads its weighting as text
                try:
                    prompt = format_weighted_prompt(
                        prompt, weighting, self.names, self.steer.conditioning_config.prompt_template
                    )
                except ValueError as error:  # a conversation without a user message to carry the weighting
                    raise APIError(400, str(error)) from None
            if chat:
                if not self.tokenizer.chat_template:
                    raise APIError(
                        400,
                        "This model's tokenizer has no chat template: use /v1/completions, or start "
                        "the server with `--chat-template FILE`.",
                    )
                try:
                    text = self.tokenizer.apply_chat_template(
                        prompt,
                        tokenize=False,
                        add_generation_prompt=True,
                        **(self.steer.conditioning_config.chat_template_kwargs or {}),
                    )
                except TemplateError as error:  # the template's own check (e.g. roles must alternate)
                    raise APIError(400, f"The chat template cannot render these messages: {error}") from None
                prompt_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                prompt_ids = self.tokenizer(prompt)["input_ids"]
            if not prompt_ids:
                raise APIError(400, "The prompt is empty: send at least one token of text.")
            room = self.context_length - len(prompt_ids)
            if room < 1:
                raise APIError(
                    400,
                    f"The prompt has {len(prompt_ids)} tokens, but this model's context is {self.context_length} tokens, "
                    f"prompt and completion together: shorten the prompt.",
                )
            max_new_tokens = requested or (
                DEFAULT_COMPLETION_TOKENS if not chat else min(self.config.max_new_tokens, room)
            )
            if max_new_tokens > room:
                raise APIError(
                    400,
                    f"The prompt has {len(prompt_ids)} tokens and max_tokens is {max_new_tokens}, but "
                    f"this model's context is {self.context_length} tokens: shorten the prompt or lower "
                    f"max_tokens.",
                )
            rows.append((prompt_ids, max_new_tokens))
        return conditioning, weighting, rows

    async def build_requests(
        self, body, prompts: list, chat: bool, request_id: str
    ) -> tuple[list[GenerationRequest], list, dict]:
        """The queued requests of one HTTP request, their event queues, and the weighting shown in the response."""
        loop = asyncio.get_running_loop()
        conditioning, weighting, rows = await loop.run_in_executor(
            self.preprocessing, self.prepare, body, prompts, chat
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
        shown = {"weights": dict(zip(self.names, weighting, strict=True))}
        if self.steer.conditioning_config.min_kl_weight is not None:
            shown["kl_weight"] = (
                body.kl_weight if body.kl_weight is not None else self.steer.conditioning_config.min_kl_weight
            )
        return requests, queues, shown

    def submit(self, requests: list[GenerationRequest]) -> None:
        try:
            self.batcher.submit(requests)
        except QueueFullError as error:
            raise APIError(503, str(error), "server_overloaded", "queue_full") from None

    @staticmethod
    async def wait_done(events: asyncio.Queue, request_id: str):
        while True:
            kind, value = await events.get()
            if kind == "done":
                return value
            if kind == "error":  # the worker logged it with the request's id
                raise APIError(500, internal_error_message(request_id), "server_error")

    @staticmethod
    def usage(results) -> Usage:
        prompt = sum(r.prompt_tokens for r in results)
        completion = sum(len(r.token_ids) for r in results)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    async def run(self, requests, queues, make_chunk, make_response, response_id: str):
        """Non-streaming: wait for every row. Streaming: server-sent events, one chunk per text delta."""
        self.submit(requests)
        if not requests[0].stream:
            # A client that leaves cancels this coroutine (`with_cancellation`): the rows are dropped below.
            gathered = asyncio.ensure_future(
                asyncio.gather(*(self.wait_done(events, response_id) for events in queues))
            )
            try:
                results = await gathered
            finally:
                gathered.cancel()
                await asyncio.gather(gathered, return_exceptions=True)  # retrieves the cancellation: nothing logged
                for request in requests:  # done, failed or abandoned: the worker drops rows still running
                    request.cancelled.set()
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
                            error = error_body(internal_error_message(response_id), "server_error")
                            yield f"data: {json.dumps(error)}\n\n"
                            return
                yield "data: [DONE]\n\n"
            finally:
                for request in requests:
                    request.cancelled.set()

        return StreamingResponse(events_stream(), media_type="text/event-stream")

    async def completions(self, body: CompletionRequest):
        """`POST /v1/completions`: a response, or a stream of chunks."""
        self.check_model(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not 1 <= len(prompts) <= self.config.max_batch_size:
            raise APIError(400, f"`prompt` takes a string or a list of 1 to {self.config.max_batch_size} strings.")
        response_id = f"cmpl-{uuid.uuid4().hex}"
        requests, queues, shown = await self.build_requests(body, prompts, False, response_id)

        def chunk(response_id, index, text, first=False, finish_reason=None):
            choice = CompletionChoice(index=index, text=text, logprobs=None, finish_reason=finish_reason)
            return CompletionChunk(
                id=response_id,
                object="text_completion",
                created=int(time.time()),
                model=self.config.model_name,
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
                model=self.config.model_name,
                choices=choices,
                usage=self.usage(results),
                **shown,
            ).model_dump(exclude_unset=True)

        return await self.run(requests, queues, chunk, response, response_id)

    async def chat_completions(self, body: ChatCompletionRequest):
        """`POST /v1/chat/completions`: a response, or a stream of chunks."""
        self.check_model(body)
        messages = [message.model_dump(exclude_none=True) for message in body.messages]
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        requests, queues, shown = await self.build_requests(body, [messages], True, response_id)

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
                model=self.config.model_name,
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
                model=self.config.model_name,
                choices=[choice],
                usage=self.usage(results),
                **shown,
            ).model_dump(exclude_unset=True)

        return await self.run(requests, queues, chunk, response, response_id)

    def model_list(self) -> ModelList:
        card = ModelCard(
            id=self.config.model_name,
            object="model",
            created=self.created,
            owned_by="trl-clp",
            objectives=self.names,
            conditioning=self.steer.conditioning_config.conditioning,
            conditioning_features=self.steer.conditioning_config.conditioning_features,
            max_model_len=self.context_length,
            kl_conditioning=self.steer.conditioning_config.min_kl_weight is not None,
        )
        return ModelList(object="list", data=[card])
