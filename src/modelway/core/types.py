"""Canonical request and stream types every surface and provider speaks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Literal

from modelway.frozen import slot_init

__all__ = [
    "ChatRequest",
    "ChoiceDelta",
    "ContentPart",
    "FunctionTool",
    "GeneratedImage",
    "ImagePart",
    "ImageRequest",
    "Message",
    "ResponseFormat",
    "RoutingPreferences",
    "StreamEvent",
    "TextPart",
    "ToolCall",
    "ToolCallAssembler",
    "ToolCallDelta",
    "ToolChoice",
    "Usage",
]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@slot_init
@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    url: str
    detail: str = "auto"


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@slot_init
@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[ContentPart, ...] = ()
    name: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""

    @property
    def text(self) -> str:
        """The text parts joined; images are not text."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str = ""
    # A JSON Schema is JSON data, not configuration: it stays a mapping.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["none", "auto", "required", "function"] = "auto"
    function_name: str = ""  # set when mode == "function"


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str = ""
    schema: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class RoutingPreferences:
    """The request's `provider` object: which upstream providers may serve it, in what order."""

    order: tuple[str, ...] = ()
    allow_fallbacks: bool = True
    sort: Literal["", "price", "latency", "throughput"] = ""
    only: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


@slot_init
@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request. Surfaces build it; providers read it."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    # Sample from the k likeliest tokens only (Gemini's topK, Anthropic's top_k); OpenAI-compatible
    # upstreams have no such parameter, and their translator leaves it out.
    top_k: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    tools: tuple[FunctionTool, ...] = ()
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = ResponseFormat()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: Mapping[str, float] = field(default_factory=dict)
    logprobs: bool = False
    top_logprobs: int | None = None
    user: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    reasoning_effort: str = ""
    stream: bool = False
    include_usage: bool = False
    routing: RoutingPreferences = RoutingPreferences()
    # Top-level request fields the gateway does not interpret (vendor
    # parameters, newer OpenAI ones), as JSON data: an OpenAI-compatible
    # upstream receives them unchanged; other wire formats cannot carry them.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text
        return ""

    def capped(self, max_tokens: int) -> ChatRequest:
        """This request with `max_tokens` set, as dataclasses.replace would make it in less than half the
        time (its fields read in C): every call to a model with an output cap makes one."""
        values = list(_FIELD_VALUES(self))
        values[_MAX_TOKENS_AT] = max_tokens
        return ChatRequest(*values)


_FIELD_VALUES = attrgetter(*(declared.name for declared in fields(ChatRequest)))
_MAX_TOKENS_AT = [declared.name for declared in fields(ChatRequest)].index("max_tokens")


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call; id and name arrive on the call's first piece."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


class ToolCallAssembler:
    """One choice's tool calls put back together from their stream pieces (id and name come once,
    arguments in parts), in call order."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]

    def add(self, pieces: Sequence[ToolCallDelta]) -> None:
        for piece in pieces:
            call = self._calls.setdefault(piece.index, ["", "", ""])
            call[0] = call[0] or piece.id
            call[1] = call[1] or piece.name
            call[2] += piece.arguments

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(id=i, name=n, arguments=a) for _, (i, n, a) in sorted(self._calls.items()))


@slot_init
@dataclass(frozen=True, slots=True)
class ChoiceDelta:
    """New output of one choice. A finish_reason closes that choice."""

    index: int
    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: FinishReason | None = None
    # OpenAI `logprobs.content` entries for this piece, as the upstream sent them.
    logprobs: tuple[Mapping[str, Any], ...] = ()


@slot_init
@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# A provider's stream: deltas in order, then exactly one Usage at the end.
StreamEvent = ChoiceDelta | Usage


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """A validated image generation request. Surfaces build it; providers read it."""

    model: str
    prompt: str
    n: int = 1
    # "" for each of these: the caller did not say, so an upstream is not told either (gpt-image-*
    # refuses response_format and quality "standard"); the echo provider draws its own defaults.
    size: str = ""
    quality: str = ""
    response_format: Literal["url", "b64_json", ""] = ""
    style: str = ""
    user: str = ""
    # As ChatRequest.extra: what an OpenAI-compatible upstream receives unchanged.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def wants_url(self) -> bool:
        """The caller gets URLs (OpenAI's default) unless it asked for b64_json."""
        return self.response_format != "b64_json"


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image: a URL or base64 PNG data (whichever was asked for), and the prompt as the model read it."""

    url: str = ""
    b64_json: str = ""
    revised_prompt: str = ""
