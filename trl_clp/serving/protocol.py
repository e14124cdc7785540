"""Request bodies of the OpenAI-compatible endpoints, validated at the edge, and the weighting field.

Only what the server does is accepted. OpenAI parameters it cannot honour (several choices, log-probabilities,
penalties, a per-request seed in a shared batch, tools, ...) are refused with a message instead of being ignored, and
an unknown field is refused by name (`extra="forbid"`).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..conditioning.steerable import SteerableModel
from ..sampling import check_weights

# Parameters of the OpenAI API that are accepted only at their neutral value: name -> (allowed values, why not).
UNSUPPORTED = {
    "n": ((None, 1), "one choice per prompt is returned; send n=1 (or several requests)"),
    "best_of": ((None, 1), "best_of is not supported; send best_of=1"),
    "logprobs": ((None, False, 0), "log-probabilities are not returned; leave logprobs unset"),
    "top_logprobs": ((None, 0), "log-probabilities are not returned; leave top_logprobs unset"),
    "echo": ((None, False), "echo is not supported; leave it false"),
    "suffix": ((None, ""), "insertion (suffix) is not supported"),
    "logit_bias": ((None, {}), "logit_bias is not supported"),
    "presence_penalty": ((None, 0, 0.0), "penalties are not supported; leave presence_penalty at 0"),
    "frequency_penalty": ((None, 0, 0.0), "penalties are not supported; leave frequency_penalty at 0"),
    "seed": ((None,), "a per-request seed cannot be honoured in a shared batch; use temperature=0 to reproduce"),
    "tools": ((None, []), "tool calling is not supported"),
    "tool_choice": ((None, "none"), "tool calling is not supported"),
    "functions": ((None, []), "function calling is not supported"),
    "function_call": ((None, "none"), "function calling is not supported"),
    "response_format": ((None, {"type": "text"}), "only plain text responses are supported"),
    "stream_options": ((None,), "stream_options is not supported"),
}


class _Request(BaseModel):
    """Fields shared by completions and chat completions, plus the CLP fields `weights` and `kl_weight`."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    stop: str | list[str] | None = None
    stream: bool = False
    user: str | None = None  # accepted and ignored, as an end-user tag
    # CLP: the weighting over the model's objectives, by name or as a list in objective order; None = uniform.
    weights: dict[str, float] | list[float] | None = None
    # CLP: the KL weight α, for models trained with KL-weight conditioning; None = the smallest trained α.
    kl_weight: float | None = None
    # Accepted only at their neutral values (see UNSUPPORTED).
    n: Any = None
    best_of: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    seed: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    stream_options: Any = None

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        for name, (allowed, why) in UNSUPPORTED.items():
            value = getattr(self, name)
            if not any(value == a and type(value) is type(a) or (value is a) for a in allowed):
                raise ValueError(f"Unsupported parameter `{name}={value!r}`: {why}.")
        if isinstance(self.stop, list) and (len(self.stop) > 4 or not all(self.stop)):
            raise ValueError("`stop` takes up to 4 non-empty strings.")
        if self.stop == "":
            raise ValueError("`stop` must not be empty.")
        return self

    @property
    def stop_strings(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_Request):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | None = None
    name: str | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)  # the chat API's newer name for max_tokens


# ---------------------------------------------------------------- responses
# Built by the handlers and dumped with `exclude_unset=True`: every field is passed explicitly, except `kl_weight`, which
# a response carries only for models trained with KL-weight conditioning.


class _Steered(BaseModel):
    """The CLP fields of a response: the weighting (and KL weight) the completion was generated with."""

    weights: dict[str, float]
    kl_weight: float | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: str | None  # "stop" (EOS or a stop string) or "length"; None until a streamed choice ends


class CompletionResponse(_Steered):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(_Steered):
    """One server-sent event of a streamed completion (`data: {...}`), one choice's text delta."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatCompletionChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: str | None  # "stop" (EOS or a stop string) or "length"; None until a streamed choice ends


class ChatCompletionResponse(_Steered):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: None
    finish_reason: str | None  # "stop" (EOS or a stop string) or "length"; None until a streamed choice ends


class ChatCompletionChunk(_Steered):
    """One server-sent event of a streamed chat completion: the first delta carries the role, the last is empty."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    objectives: list[str]
    conditioning: str
    conditioning_features: list[str]
    max_model_len: int
    kl_conditioning: bool


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    queued: int
    batches: int
    rows: int


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error the server answers, 4xx or 5xx, as OpenAI's clients read it."""

    error: ErrorInfo


def resolve_weighting(weights: dict[str, float] | list[float] | None, objective_names: list[str]) -> list[float]:
    """The request's weighting as a list in objective order, validated like the Python API (`check_weights`).

    A mapping names objectives; objectives it leaves out weigh 0. None gives the uniform weighting 1/m. Weights are
    never normalised: a weighting that does not sum to 1 is refused, as `SteerableModel.generate` refuses it.

    Raises:
        ValueError: unknown names, wrong length, NaN/inf, negative entries, or a sum other than 1.
    """
    if weights is None:
        return [1.0 / len(objective_names)] * len(objective_names)
    if isinstance(weights, dict):
        unknown = sorted(set(weights) - set(objective_names))
        if unknown:
            raise ValueError(
                f"`weights` names unknown objectives {unknown}: this model's objectives are {objective_names}."
            )
        weights = [weights.get(name, 0.0) for name in objective_names]
    elif len(weights) != len(objective_names):
        raise ValueError(
            f"`weights` has {len(weights)} values but the model has {len(objective_names)} objectives "
            f"{objective_names}: give one weight per objective, in that order, or a mapping by name."
        )
    check_weights(weights, len(objective_names))
    return [float(w) for w in weights]


def conditioning_for(steer: SteerableModel, weighting: list[float], kl_weight: float | None) -> torch.Tensor | None:
    """`(num_blocks,)` conditioning vector of a request; None for the prompting variant (weighted through its text).

    Raises:
        ValueError: `kl_weight` given to a model without KL conditioning, non-finite, or below the trained range.
    """
    if kl_weight is not None and not math.isfinite(kl_weight):
        raise ValueError(f"`kl_weight` must be a finite number, got {kl_weight}.")
    if steer.conditioning_config.conditioning == "prompt":
        if kl_weight is not None:
            raise ValueError("This prompting-baseline model has no KL-weight conditioning: drop `kl_weight`.")
        return None
    return steer.conditioning_vector(torch.tensor(weighting), kl_weight)
