"""Store.forget_exchange on both stores: an exchange whose answer never reached its caller is taken back."""

from __future__ import annotations

import pytest

from modelway.store import Store
from modelway.store.records import AccountRecord


@pytest.fixture
async def store(store: Store) -> Store:
    """The store, with the account the exchanges belong to."""
    await store.insert_account(AccountRecord("acct", "acct", "free", 0), 0)
    return store


async def test_a_forgotten_follow_up_leaves_the_conversation_as_it_was(store: Store) -> None:
    earlier = await store.save_exchange("acct", None, "echo-1", "one?", "One.", 5, 100.0)
    assert earlier is not None
    conversation, first = earlier
    saved = await store.save_exchange("acct", conversation, "gpt-fake", "two?", "Two.", 7, 200.0)
    assert saved is not None and saved[0] == conversation
    await store.forget_exchange(conversation, saved[1])
    messages = await store.conversation_messages(conversation)
    assert [(m.role, m.content) for m in messages] == [("user", "one?"), ("assistant", "One.")]
    assert messages[1].id == first
    found = await store.conversation("acct", conversation)
    assert found is not None
    assert (found.model, found.updated_at, found.message_count) == ("echo-1", 100.0, 2)


async def test_a_forgotten_first_exchange_takes_its_conversation_with_it(store: Store) -> None:
    kept = await store.save_exchange("acct", None, "echo-1", "kept?", "Kept.", 5, 100.0)
    gone = await store.save_exchange("acct", None, "echo-1", "gone?", "Gone.", 5, 200.0)
    assert kept is not None and gone is not None
    await store.forget_exchange(*gone)
    assert await store.conversation("acct", gone[0]) is None
    assert await store.conversation_messages(gone[0]) == []
    found, total = await store.conversations("acct", 0, 20)
    assert [c.id for c in found] == [kept[0]] and total == 1
