"""Which models may answer a request, in what order: names, aliases, `auto`, fallbacks, preferences.

`auto` picks one of its tiers by what the request looks like (see
`classify`), tier 0 for simple requests, tier 1 for complex ones, tier 2 for
reasoning; the other tiers follow as fallbacks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from modelway.config import ModelConfig
from modelway.core.catalog import Catalog
from modelway.core.directory import Caller
from modelway.core.tokens import count_message_tokens
from modelway.core.types import ChatRequest, Message, TextPart
from modelway.errors import GatewayError, Reason, clip

__all__ = ["AUTO", "Resolver", "classify", "output_cap", "prepare"]

AUTO = "auto"
SIMPLE, COMPLEX, REASONING = 0, 1, 2

# Cues that a request wants step-by-step reasoning, or is about code.
_REASONING = re.compile(
    r"\b(prove|proof|step[- ]by[- ]step|reason(?:ing)? through|derive|theorem|think carefully|puzzle|riddle)\b",
    re.IGNORECASE,
)
_CODE = re.compile(
    r"```|\b(def|class|function|import|SELECT)\b|(?i:\b(stack trace|traceback|refactor|compile|regex)\b)"
)
# Prompts longer than this (tokens) go to the complex tier.
_LONG_PROMPT = 2_000


def classify(request: ChatRequest) -> int:
    """SIMPLE, COMPLEX or REASONING: reasoning cues or a reasoning_effort win; then tools,
    code, a long prompt, or a long conversation make a request complex."""
    text = "\n".join(message.text for message in request.messages if message.role in ("user", "system", "developer"))
    if request.reasoning_effort in ("medium", "high") or _REASONING.search(text):
        return REASONING
    if request.tools or request.response_format.type == "json_schema" or _CODE.search(text):
        return COMPLEX
    if count_message_tokens(request.messages) > _LONG_PROMPT or len(request.messages) > 12:
        return COMPLEX
    return SIMPLE


def output_cap(request: ChatRequest, model: ModelConfig) -> int:
    """The most tokens one choice may produce: what the caller asked, within the model's cap."""
    return model.max_output_tokens if request.max_tokens is None else min(request.max_tokens, model.max_output_tokens)


def prepare(request: ChatRequest, model: ModelConfig) -> ChatRequest:
    """The request as one model receives it: max_tokens capped by the model, its system prompt added."""
    cap = output_cap(request, model)
    if cap != request.max_tokens:  # a copy of the request's many fields is not free: only when it changes
        request = request.capped(cap)
    if not model.system_prompt:
        return request
    messages = list(request.messages)
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            # Appended to the caller's own system message, so the model's prompt has the last word.
            text = f"{message.text}\n\n{model.system_prompt}" if message.text else model.system_prompt
            messages[index] = replace(message, content=(TextPart(text),))
            break
    else:
        messages.insert(0, Message(role="system", content=(TextPart(model.system_prompt),)))
    return replace(request, messages=tuple(messages))


# Where a model of each other type (config.MODEL_TYPES) is called instead.
_ENDPOINTS = {"image": "POST /api/v1/images/generations (or the ImagesService GenerateImages RPC)"}


def _not_a_chat_model(name: str, model: ModelConfig) -> GatewayError:
    where = _ENDPOINTS.get(model.type, "")
    return GatewayError(
        Reason.INVALID_VALUE,
        f"The model `{clip(name)}` is an {model.type} model, not a chat model"
        + (f": send it to {where}." if where else "."),
        param="model",
    )


class Resolver:
    def __init__(
        self, catalog: Catalog, aliases: Mapping[str, Sequence[str]], *, latency: Callable[[str], float]
    ) -> None:
        self._catalog = catalog
        self._aliases = aliases
        self._latency = latency  # provider -> moving average seconds to first byte

    def candidates(self, request: ChatRequest, caller: Caller) -> tuple[ModelConfig, ...]:
        """The models to try, in order; 404 for an unknown name, 403 when the key may use none of them."""
        name = request.model
        if name in self._aliases:
            targets = list(self._aliases[name])
            if name == AUTO and targets:
                tier = min(classify(request), len(targets) - 1)
                targets.insert(0, targets.pop(tier))
            models = self._expand(targets)
        else:
            models = self._expand([self._catalog.resolve(name).id])
        # Only chat models answer chat calls: an image model reached by name is refused (it would
        # otherwise answer as the echo does, for free); one reached through an alias or a fallback is skipped.
        chat = [model for model in models if model.type == "chat"]
        if not chat:
            raise _not_a_chat_model(name, models[0])
        models = chat
        # A key allowed an alias may use whatever the alias names.
        alias_allowed = name in self._aliases and caller.may_use_model(name)
        allowed = [model for model in models if alias_allowed or caller.may_use_model(model.id)]
        if not allowed:
            raise GatewayError(
                Reason.MODEL_NOT_ALLOWED, f"This API key may not use the model `{clip(name)}`.", param="model"
            )
        return self._apply_preferences(request, tuple(allowed))

    def image_candidates(self, name: str, caller: Caller) -> tuple[ModelConfig, ...]:
        """The image models to try for `name` (an image model, or an alias naming some), in order;
        "" means the catalog's first image model the key may use. 404 for an unknown name, 400 for one that makes
        no images, 403 when the key may use none of them."""
        if not name:
            images = [model for model in self._catalog.all() if model.type == "image"]
            first = next((model for model in images if caller.may_use_model(model.id)), images[0] if images else None)
            if first is None:
                raise GatewayError(
                    Reason.MISSING_REQUIRED_PARAMETER,
                    "You must provide a model parameter: no image model is configured as the default.",
                    param="model",
                )
            name = first.id
        targets = list(self._aliases[name]) if name in self._aliases else [self._catalog.resolve(name).id]
        models = [model for model in self._expand(targets) if model.type == "image"]
        if not models:
            raise GatewayError(
                Reason.INVALID_VALUE, f"The model `{clip(name)}` does not generate images.", param="model"
            )
        alias_allowed = name in self._aliases and caller.may_use_model(name)
        allowed = tuple(model for model in models if alias_allowed or caller.may_use_model(model.id))
        if not allowed:
            raise GatewayError(
                Reason.MODEL_NOT_ALLOWED, f"This API key may not use the model `{clip(name)}`.", param="model"
            )
        return allowed

    def _expand(self, names: Sequence[str]) -> list[ModelConfig]:
        """Aliases replaced by their models, each model followed by its fallbacks, each model once."""
        seen: dict[str, ModelConfig] = {}

        def add(name: str) -> None:
            if name in self._aliases:
                for target in self._aliases[name]:
                    add(target)
            elif name not in seen:
                model = self._catalog.resolve(name)
                seen[name] = model
                for fallback in model.fallbacks:
                    add(fallback)

        for name in names:
            add(name)
        return list(seen.values())

    def _apply_preferences(self, request: ChatRequest, models: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        prefs = request.routing
        chosen = [
            model
            for model in models
            if (not prefs.only or model.provider in prefs.only) and model.provider not in prefs.ignore
        ]
        if prefs.sort == "price":
            chosen.sort(key=lambda model: model.input_credits_per_1k + model.output_credits_per_1k)
        elif prefs.sort in ("latency", "throughput"):
            chosen.sort(key=lambda model: self._latency(model.provider))
        if prefs.order:
            rank = {provider: index for index, provider in enumerate(prefs.order)}
            ordered = sorted((m for m in chosen if m.provider in rank), key=lambda m: rank[m.provider])
            rest = [m for m in chosen if m.provider not in rank]
            chosen = ordered + ([] if not prefs.allow_fallbacks else rest)
        elif not prefs.allow_fallbacks:
            chosen = chosen[:1]
        if not chosen:
            raise GatewayError(
                Reason.INVALID_VALUE,
                f"No provider allowed by the request's `provider` preferences serves `{request.model}`.",
                param="provider",
            )
        return tuple(chosen)
