"""The few words the core's own errors borrow from the API a call came through (its parameter names).

The core raises the same errors for every surface, but the advice they end
with names a surface's own header or parameter: "send the key as
Authorization: Bearer" is right for OpenAI and wrong for Gemini, whose
callers send `x-goog-api-key`. Each surface carries one `Wording`; the core
asks it for the advice instead of any surface rewriting a message.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHAT_SEND_WORDING",
    "GEMINI_WORDING",
    "GRPC_WORDING",
    "IMAGES_WORDING",
    "NATIVE_WORDING",
    "OPENAI_WORDING",
    "Wording",
]


@dataclass(frozen=True, slots=True)
class Wording:
    # How to send a key (the end of "You didn't provide an API key. ...").
    send_key: str
    # What to lower so a call's worst case fits the balance (the end of the credits error).
    spend_less: str
    # How to get an answer too large for one JSON body (the end of that error).
    answer_smaller: str


OPENAI_WORDING = Wording(
    send_key="Send it as 'Authorization: Bearer YOUR_KEY'.",
    spend_less="Add credits or lower max_tokens.",
    answer_smaller="Stream it (stream: true), or ask for fewer choices (n) or fewer tokens (max_tokens).",
)
GEMINI_WORDING = Wording(
    send_key="Send it in the 'x-goog-api-key' header or as the 'key' query parameter (?key=YOUR_KEY).",
    spend_less="Add credits or lower generationConfig.maxOutputTokens.",
    answer_smaller=(
        "Stream it (streamGenerateContent), or ask for fewer candidates (candidateCount) or fewer tokens "
        "(maxOutputTokens)."
    ),
)
NATIVE_WORDING = Wording(
    send_key="Send it as 'Authorization: Bearer YOUR_KEY'.",
    spend_less="Add credits or lower max_tokens.",
    answer_smaller="Stream it (stream: true) or lower max_tokens.",
)
# Image calls (OpenAI's images API, and images asked for through chat completions): priced per image.
IMAGES_WORDING = Wording(
    send_key="Send it as 'Authorization: Bearer YOUR_KEY'.",
    spend_less="Add credits, or ask for fewer images (n) or standard quality.",
    answer_smaller="Ask for fewer images (n), or response_format 'url' instead of 'b64_json'.",
)
# chat/send answers its own fixed words for a bad key and an empty balance; these show on nothing else.
CHAT_SEND_WORDING = Wording(
    send_key="Send it in the 'X-API-Key' header.",
    spend_less="Add points.",
    answer_smaller="Send a shorter message.",
)
# The typed gRPC services: the key goes in request metadata.
GRPC_WORDING = Wording(
    send_key="Send it as 'authorization: Bearer YOUR_KEY' metadata.",
    spend_less="Add credits or lower max_tokens.",
    answer_smaller="Use the streaming RPC, or ask for fewer choices or fewer tokens.",
)
