"""The few words the core's own errors borrow from the API a call came through (its parameter names).

The core raises the same errors for every surface, but the advice they end
with names a surface's own header or parameter: "send the key as
Authorization: Bearer" is right for OpenAI and wrong for Gemini, whose
callers send `x-goog-api-key`. Each surface module defines its own `Wording`
beside its dialect; the core asks the call's surface for the advice instead
of any surface rewriting a message, and has no words of its own to fall back on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Wording"]


@dataclass(frozen=True, slots=True)
class Wording:
    # How to send a key (the end of "You didn't provide an API key. ...").
    send_key: str
    # What to lower so a call's worst case fits the balance (the end of the credits error).
    spend_less: str
    # How to get an answer too large for one JSON body (the end of that error).
    answer_smaller: str
