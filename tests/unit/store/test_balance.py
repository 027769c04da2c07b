"""Store.balance on both stores: one account's balance, read alone (what seeding a new account needs)."""

from __future__ import annotations

from modelway.store import Store
from modelway.store.records import AccountRecord


async def test_one_accounts_balance_follows_its_credits_and_an_unknown_account_has_none(store: Store) -> None:
    await store.insert_account(AccountRecord("acct_a", "a", "free", 0), 1500)
    await store.insert_account(AccountRecord("acct_b", "b", "free", 0), 7)
    assert await store.balance("acct_a") == 1500
    assert await store.balance("acct_b") == 7
    assert await store.balance("acct_nobody") is None
    await store.add_credits("acct_a", -2000)  # never below zero
    assert await store.balance("acct_a") == 0
    assert await store.balance("acct_a") == (await store.balances())["acct_a"]
