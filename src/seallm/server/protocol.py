"""OpenAI request bodies (pydantic), with vLLM's extensions. Unknown fields are rejected.

Every number has a range: floats must be finite (JSON ``NaN``, ``Infinity`` and overflowing
literals such as ``1e400`` are refused), integers fit the engine's native types (``seed``
and ``priority`` 64-bit, ``top_k`` and token ids 32-bit). A violation is HTTP 400 naming
the field, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

INT32_MAX = (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
TokenId = Annotated[StrictInt, Field(ge=0, le=INT32_MAX)]
# Token ids in prompts are checked against each model's vocabulary by the server (400).
PromptTokenId = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class SLOSpec(_Strict):
    """Per-request latency targets (seallm extension; the fields of ``seallm.core.SLO``):
    seconds, except ``ttft_slowdown`` (a multiple >= 1 of the zero-load prefill time) and
    ``thinking_tokens`` (output tokens of a reasoning model's thinking stage, paced by
    ``tpot_thinking``). With ``slo_class``, the fields given override the class's."""

    ttft: FiniteFloat | None = Field(None, gt=0)
    tpot: FiniteFloat | None = Field(None, gt=0)
    e2e: FiniteFloat | None = Field(None, gt=0)
    ttft_slowdown: FiniteFloat | None = Field(None, ge=1)
    tpot_thinking: FiniteFloat | None = Field(None, gt=0)
    thinking_tokens: StrictInt | None = Field(None, ge=0, le=INT32_MAX)


class _Sampling(_Strict):
    """Fields shared by completions and chat completions."""

    model: StrictStr
    max_tokens: StrictInt | None = Field(None, le=INT32_MAX)
    temperature: FiniteFloat | None = Field(None, ge=0)
    top_p: FiniteFloat | None = Field(None, gt=0, le=1)
    n: StrictInt = Field(1, ge=1, le=16)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = Field(None, max_length=64)
    seed: StrictInt | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: FiniteFloat = Field(0.0, ge=-2, le=2)
    frequency_penalty: FiniteFloat = Field(0.0, ge=-2, le=2)
    user: StrictStr | None = None
    # vLLM extensions
    ignore_eos: StrictBool = False
    top_k: StrictInt | None = Field(None, ge=-1, le=INT32_MAX)
    min_p: FiniteFloat | None = Field(None, ge=0, le=1)
    priority: StrictInt = Field(0, ge=INT64_MIN, le=INT64_MAX)
    slo: SLOSpec | None = None
    slo_class: StrictStr | None = None
    stop_token_ids: list[TokenId] | None = Field(None, max_length=64)
    include_stop_str_in_output: StrictBool = False
    skip_special_tokens: StrictBool = True


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: Union[StrictStr, list[StrictStr], list[PromptTokenId], list[list[PromptTokenId]]]
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None
    logit_bias: dict[str, FiniteFloat] | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # tool_calls, name, ... pass through to the template
    role: StrictStr
    content: StrictStr | list[TextPart] | None = None


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = None
    logprobs: StrictBool = False
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, FiniteFloat] | None = None
    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: StrictStr | dict | None = None
    parallel_tool_calls: StrictBool | None = None
    add_generation_prompt: StrictBool = True
    chat_template_kwargs: dict[str, Any] | None = None
