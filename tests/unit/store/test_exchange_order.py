"""Store.save_exchange(after=...) on both stores: an exchange is stored only after the message its
history ended with; otherwise nothing is written (ConversationChanged)."""

from __future__ import annotations

import pytest

from modelway.errors import Reason
from modelway.store import ConversationChanged, Store
from tests.unit.store.test_forget_exchange import store

__all__ = ["store"]


async def test_an_exchange_built_on_the_last_message_is_stored(store: Store) -> None:
    first = await store.save_exchange("acct", None, "echo-1", "one?", "One.", 5, 100.0)
    assert first is not None
    conversation, answer = first
    second = await store.save_exchange("acct", conversation, "echo-1", "two?", "Two.", 5, 200.0, after=answer)
    assert second is not None and second[0] == conversation
    third = await store.save_exchange("acct", conversation, "echo-1", "3?", "3.", 5, 300.0, after=second[1])
    assert third is not None
    assert len(await store.conversation_messages(conversation)) == 6


async def test_an_exchange_built_on_an_older_message_is_refused_and_writes_nothing(store: Store) -> None:
    first = await store.save_exchange("acct", None, "echo-1", "one?", "One.", 5, 100.0)
    assert first is not None
    conversation, answer = first
    # Two follow-ups answered from the same two-message history: the second to be stored loses.
    assert await store.save_exchange("acct", conversation, "echo-1", "a?", "A.", 5, 200.0, after=answer) is not None
    with pytest.raises(ConversationChanged) as caught:
        await store.save_exchange("acct", conversation, "gpt-fake", "b?", "B.", 7, 300.0, after=answer)
    assert caught.value.reason is Reason.CONVERSATION_CHANGED and caught.value.http_status == 409
    messages = await store.conversation_messages(conversation)
    assert [m.content for m in messages] == ["one?", "One.", "a?", "A."]
    found = await store.conversation("acct", conversation)
    assert found is not None and (found.model, found.updated_at) == ("echo-1", 200.0)  # rolled back too
    # A history that was empty (0) no longer is.
    with pytest.raises(ConversationChanged):
        await store.save_exchange("acct", conversation, "echo-1", "c?", "C.", 5, 400.0, after=0)
