"""One generation worker that serves concurrent requests in shared batches, each row steered by its own weighting.

A CLP model applies a weighting per batch row (see `trl_clp.conditioning.layer`), so requests with different
weightings can share one `generate` call. The worker takes waiting requests from a bounded queue, groups those
whose decoding settings can share a call (greedy, or the same temperature and top-p), and runs them as one
left-padded batch. Everything that differs per request is handled per row, so that a greedy request gets the same
tokens whichever requests share its batch:

- the weighting (and KL weight) is the row's own conditioning vector;
- `max_tokens`, EOS and stop strings are checked per row by a `StoppingCriteria` that marks only that row finished
  (`generate` stops when every row is);
- the attention mask hides the left padding, and `generate` derives each row's positions from it;
- a batch runs until its longest budget, and rows that finished early keep advancing their positions, so a request
  joins a batch only if every row's prompt plus the batch's longest budget fits the model's context (a model with
  learned positions cannot index past it);
- decoding uses the request's settings only: a neutral generation config overrides the checkpoint's
  `generation_config.json` (a `repetition_penalty` there would otherwise change greedy tokens the API cannot ask for).

Only the worker thread touches the model, and every call sets its weighting inside `SteerableModel.generate`'s
`condition` block, so no weighting outlives its batch.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from ..conditioning.steerable import SteerableModel

# An idle worker waits for a batch to fill for at most this many `batch_wait_s`.
MAX_WAIT_FACTOR = 10
# `generate` fills every option a generation config leaves unset from the checkpoint's `generation_config.json`, so
# each option that changes tokens is set here to its neutral value: decoding is what the request asked for, nothing else.
NEUTRAL_DECODING = dict(
    num_beams=1,
    repetition_penalty=1.0,
    encoder_repetition_penalty=1.0,
    no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0,
    min_new_tokens=0,  # takes precedence over a checkpoint's `min_length`
    guidance_scale=1.0,
    renormalize_logits=False,
    remove_invalid_values=False,
)
# The same for the options that only sampling reads (set for greedy decoding, they only draw warnings). top_k=0 turns
# off transformers' default top-k: the OpenAI API has no top-k.
NEUTRAL_SAMPLING = dict(top_k=0, min_p=0.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
# Options that change tokens and have no neutral value other than unset: a checkpoint that sets one is refused.
UNNEUTRAL_DECODING = (
    "bad_words_ids",
    "sequence_bias",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "exponential_decay_length_penalty",
    "top_h",
    "watermarking_config",
    "max_time",
    "stop_strings",
)
logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The request queue is full: the server is at capacity, retry later."""


@dataclass(frozen=True)
class SamplingKey:
    """Decoding settings that `generate` applies to the whole batch: only requests with equal keys share a batch."""

    temperature: float  # 0 means greedy
    top_p: float

    def generation_config(self, max_new_tokens: int, pad_token_id: int) -> GenerationConfig:
        """Every token-changing option explicitly: the request's sampling, everything else neutral."""
        if self.temperature == 0:
            decoding = dict(do_sample=False)
        else:
            decoding = dict(do_sample=True, temperature=self.temperature, top_p=self.top_p, **NEUTRAL_SAMPLING)
        return GenerationConfig(
            max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, **decoding, **NEUTRAL_DECODING
        )


@dataclass
class GenerationRequest:
    """One prompt to complete. `emit` is called from the worker thread with each event of the request:
    `("delta", text)` while streaming, then `("done", GenerationResult)` or `("error", exception)`.

    Args:
        prompt_ids: the tokenized prompt (for the prompting variant, with the weighting already written in).
        conditioning: `(num_blocks,)` conditioning vector (`SteerableModel.conditioning_vector`); None for the
            prompting variant, whose weighting is in the prompt.
        max_new_tokens: this row's budget.
        sampling: decoding settings shared by the batch.
        stop: strings that end the completion (not included in its text).
        stream: emit text deltas as tokens arrive.
        request_id: names the request in the server log (e.g. when its batch fails).
    """

    prompt_ids: list[int]
    conditioning: torch.Tensor | None
    max_new_tokens: int
    sampling: SamplingKey
    emit: Callable[[tuple], None]
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    request_id: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]  # generated tokens, EOS included when the row ended on it
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    prompt_tokens: int


class _RowProgress(StoppingCriteria):
    """Tracks each row's tokens, ends each row on its own EOS / stop string / budget, and streams text deltas.

    Called by `generate` after every decoding step with the whole `(B, T)` sequence; returns `(B,)` booleans, True
    for rows that are finished. Tokens a finished row receives afterwards (padding) are ignored.
    """

    def __init__(self, requests: list[GenerationRequest], prompt_length: int, tokenizer, eos_token_ids: set[int]):
        self.requests = requests
        self.prompt_length = prompt_length
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.text: list[str] = ["" for _ in requests]
        self.finish_reason: list[str | None] = [None for _ in requests]
        self.streamed: list[int] = [0 for _ in requests]  # characters already emitted

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        new_tokens = input_ids[:, -1].tolist()
        for row, (request, token) in enumerate(zip(self.requests, new_tokens, strict=True)):
            if self.finish_reason[row] is not None:
                continue
            if request.cancelled.is_set():
                self.finish_reason[row] = "cancelled"
                continue
            self.tokens[row].append(token)
            if token in self.eos_token_ids:
                self.finish_reason[row] = "stop"
                continue
            if request.stop or request.stream:
                self._update_text(row)
            if self.finish_reason[row] is None and len(self.tokens[row]) >= request.max_new_tokens:
                self.finish_reason[row] = "length"
            if request.stream:
                self._stream(row)
        return torch.tensor([reason is not None for reason in self.finish_reason], device=input_ids.device)

    def _update_text(self, row: int) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        for stop in self.requests[row].stop:
            index = text.find(stop)
            if index != -1:
                text = text[:index]
                self.finish_reason[row] = "stop"
        self.text[row] = text

    def _stream(self, row: int) -> None:
        text = self.text[row]
        if self.finish_reason[row] is None:
            # Hold back an incomplete UTF-8 character and any tail that may still become a stop string.
            safe = len(text.rstrip("\ufffd"))
            for stop in self.requests[row].stop:
                for size in range(min(len(stop) - 1, safe), 0, -1):
                    if text[safe - size : safe] == stop[:size]:
                        safe -= size
                        break
            text = text[:safe]
        if len(text) > self.streamed[row]:
            self.requests[row].emit(("delta", text[self.streamed[row] :]))
            self.streamed[row] = len(text)

    def result(self, row: int) -> GenerationResult:
        request = self.requests[row]
        if self.finish_reason[row] is None:  # generate's own length limit ended the batch
            self.finish_reason[row] = "length"
        if self.finish_reason[row] == "stop" and self.tokens[row] and self.tokens[row][-1] in self.eos_token_ids:
            text = self.tokenizer.decode(self.tokens[row][:-1], skip_special_tokens=True)
        elif request.stop or request.stream:
            text = self.text[row]
        else:
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if request.stream and len(text) > self.streamed[row]:
            request.emit(("delta", text[self.streamed[row] :]))
        return GenerationResult(text, list(self.tokens[row]), self.finish_reason[row], len(request.prompt_ids))


class RequestBatcher:
    """A bounded request queue and the worker thread that serves it in batches of compatible requests.

    Compatible: the same `SamplingKey`, and every row's prompt plus the batch's longest budget within
    `context_length` (the model's `max_position_embeddings`, else the tokenizer's `model_max_length`).

    Args:
        steer: the model; only the worker thread calls it.
        tokenizer: decodes completions (and checks stop strings).
        max_batch_size: most rows in one `generate` call.
        max_queue_size: requests waiting beyond the running batch; `submit` raises `QueueFullError` past it.
        batch_wait_s: an idle worker that gets a request waits for others to join its batch until none has come for
            `batch_wait_s` (or `MAX_WAIT_FACTOR × batch_wait_s` have passed).

    Raises:
        ValueError: the checkpoint's generation config sets an option that changes tokens and cannot be neutralised
            per request (`UNNEUTRAL_DECODING`).
    """

    def __init__(
        self,
        steer: SteerableModel,
        tokenizer,
        max_batch_size: int = 32,
        max_queue_size: int = 256,
        batch_wait_s: float = 0.01,
    ):
        self.steer = steer
        checkpoint = steer.model.generation_config
        fixed = [name for name in UNNEUTRAL_DECODING if getattr(checkpoint, name, None) is not None]
        if fixed:
            raise ValueError(
                f"The model's generation config sets {fixed}, which would change every served completion although "
                f"requests cannot ask for it: remove them from its generation_config.json (or set them to None on "
                f"`model.generation_config`) before serving."
            )
        # Positions the model can embed: a row must not be advanced past them (see `_fits`).
        self.context_length = (
            getattr(steer.model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        )
        # The worker decodes with its own copy: a fast tokenizer used from two threads at once can raise
        # "Already borrowed" while the server thread encodes.
        self.tokenizer = copy.deepcopy(tokenizer)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self._queue: queue.Queue[GenerationRequest] = queue.Queue(maxsize=max_queue_size)
        self._pending: list[GenerationRequest] = []  # taken from the queue, waiting for a batch of their kind
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        eos = steer.model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_token_ids = set(eos)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
        self.batches_run = 0
        self.rows_run = 0

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._pending)

    def start(self) -> None:
        self._closing.clear()
        self._thread = threading.Thread(target=self._serve, name="trl-clp-generation", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the worker after its current batch; requests still waiting get an error."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join()
        waiting = self._pending + [self._queue.get_nowait() for _ in range(self._queue.qsize())]
        self._pending = []
        for request in waiting:
            request.emit(("error", RuntimeError("The server is shutting down.")))

    def submit(self, requests: list[GenerationRequest]) -> None:
        """Queue requests (all or none). Raises `QueueFullError` when the queue has no room for all of them."""
        submitted = []
        try:
            for request in requests:
                self._queue.put_nowait(request)
                submitted.append(request)
        except queue.Full as error:
            for request in submitted:  # the worker skips them
                request.cancelled.set()
            raise QueueFullError(
                f"The server is at capacity ({self._queue.maxsize} requests waiting): retry later."
            ) from error

    def _serve(self) -> None:
        while not self._closing.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            try:
                self._generate(batch)
            except Exception as error:  # one bad batch must not stop the server: its requests get the error
                # Logged here, once per batch; clients get a generic message naming their request (the exception's
                # text can hold paths and device details).
                logger.exception("Generation failed for requests %s", [request.request_id for request in batch])
                for request in batch:
                    try:
                        request.emit(("error", error))
                    except Exception:  # a client that is gone (its event loop closed) cannot be told
                        pass

    def _next_batch(self) -> list[GenerationRequest]:
        if not self._pending:
            try:
                self._pending.append(self._queue.get(timeout=0.1))
            except queue.Empty:
                return []
            # Let a burst of concurrent requests arrive: wait while they keep coming (gaps under `batch_wait_s`),
            # at most `MAX_WAIT_FACTOR` gaps in all.
            deadline = time.monotonic() + MAX_WAIT_FACTOR * self.batch_wait_s
            while len(self._pending) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                try:
                    self._pending.append(self._queue.get(timeout=min(left, self.batch_wait_s)))
                except queue.Empty:
                    break
        while len(self._pending) < self.max_batch_size:
            try:
                self._pending.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self._pending = [request for request in self._pending if not request.cancelled.is_set()]
        if not self._pending:
            return []
        # The oldest request goes first, with the requests of its kind that fit beside it, so no request waits
        # behind a stream of another kind or of longer ones.
        oldest = self._pending[0]
        batch = [oldest]
        for request in self._pending[1:]:
            if (
                len(batch) < self.max_batch_size
                and request.sampling == oldest.sampling
                and self._fits(batch + [request])
            ):
                batch.append(request)
        chosen = {id(request) for request in batch}
        self._pending = [request for request in self._pending if id(request) not in chosen]
        return batch

    def _fits(self, batch: list[GenerationRequest]) -> bool:
        """Whether every row stays within the context: the batch runs to its longest budget and a row that finished
        early still advances its positions, so each prompt plus the batch's longest budget must fit."""
        longest_prompt = max(len(request.prompt_ids) for request in batch)
        return longest_prompt + max(request.max_new_tokens for request in batch) <= self.context_length

    def _generate(self, batch: list[GenerationRequest]) -> None:
        device = self.steer.device
        length = max(len(request.prompt_ids) for request in batch)
        input_ids = torch.full((len(batch), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, request in enumerate(batch):  # left padding: every row's next token is at the same position
            input_ids[row, length - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention_mask[row, length - len(request.prompt_ids) :] = 1
        progress = _RowProgress(batch, length, self.tokenizer, self.eos_token_ids)
        max_new_tokens = max(request.max_new_tokens for request in batch)
        kwargs = dict(
            attention_mask=attention_mask.to(device),
            generation_config=batch[0].sampling.generation_config(max_new_tokens, self.pad_token_id),
            stopping_criteria=StoppingCriteriaList([progress]),
        )
        if self.steer.conditioning_config.conditioning == "prompt":  # the weighting is already in each prompt
            self.steer.model.generate(input_ids=input_ids.to(device), **kwargs)
        else:
            conditioning = torch.stack([request.conditioning for request in batch])  # (B, num_blocks)
            with self.steer.conditioner.condition(conditioning.to(device)):
                self.steer.model.generate(input_ids=input_ids.to(device), **kwargs)
        self.batches_run += 1
        self.rows_run += len(batch)
        for row, request in enumerate(batch):
            if progress.finish_reason[row] != "cancelled":
                request.emit(("done", progress.result(row)))
