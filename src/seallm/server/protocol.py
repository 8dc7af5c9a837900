"""OpenAI request bodies (pydantic), with vLLM's extensions. Unknown fields are rejected."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False


class SLOSpec(_Strict):
    """Per-request latency targets in seconds (seallm extension)."""

    ttft: float | None = Field(None, gt=0)
    tpot: float | None = Field(None, gt=0)
    e2e: float | None = Field(None, gt=0)


class _Sampling(_Strict):
    """Fields shared by completions and chat completions."""

    model: StrictStr
    max_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: StrictInt = Field(1, ge=1, le=16)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: StrictStr | None = None
    # vLLM extensions
    ignore_eos: StrictBool = False
    top_k: StrictInt | None = None
    min_p: float | None = None
    priority: StrictInt = 0
    slo: SLOSpec | None = None
    slo_class: StrictStr | None = None
    stop_token_ids: list[StrictInt] | None = None
    include_stop_str_in_output: StrictBool = False
    skip_special_tokens: StrictBool = True


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    echo: StrictBool = False
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None
    logit_bias: dict[str, float] | None = None


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
    logit_bias: dict[str, float] | None = None
    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: StrictStr | dict | None = None
    parallel_tool_calls: StrictBool | None = None
    add_generation_prompt: StrictBool = True
    chat_template_kwargs: dict | None = None
