"""Crash safety: kill -9 the server under load; every call a client received completely is in the usage table.

Clients call through Envoy (JSON and SSE, several at once, on the OpenAI,
Gemini and gateway-native surfaces, and chat/send; the public catalog is
read beside them, keyless and rowless) while the server process is killed with
SIGKILL, then restarted on the same database, three times. After each kill
the store must open cleanly and hold exactly one row, with its surface's
name, for every call whose answer arrived whole (a parsed JSON 200; an
OpenAI or native SSE stream ending in `data: [DONE]`; a Gemini stream whose
last event carries usageMetadata and a finishReason), matched by the
answer's X-Request-Id; a chat/send answer's exchange must be stored under
the conversation and message ids it gave (each chat/send client continues
one conversation across the kills: its exchanges are stored in the order it
got them, with at most one unanswered exchange per kill); no answer that
arrives while the server is up is a 5xx or, for the catalog and chat/send,
outside the envelope; and the balance must have dropped by exactly the sum
of the rows' costs. The flush
timer is set to a minute, so nothing but the commit before the answer can
have saved those rows. A stream the kill cuts is billed for what it had
delivered as far as its last checkpoint.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from modelway.core.tokens import count_tokens
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.real.postgres import PgDatabase, connect_db

CHAT = "/api/v1/chat/completions"
NATIVE_CHAT = "/api/v1/ai/chat"
KILLS = 3
LOAD_SECONDS = 1.5
CREDITS = 1_000_000


@dataclass(frozen=True)
class Kind:
    """One kind of call: its surface (the usage row's name) and whether it streams."""

    surface: str
    stream: bool

    @property
    def label(self) -> str:
        return f"{self.surface} {'SSE' if self.stream else 'JSON'}"


OPENAI_JSON, OPENAI_SSE = Kind("openai", False), Kind("openai", True)
GEMINI_JSON, GEMINI_SSE = Kind("gemini", False), Kind("gemini", True)
NATIVE_JSON, NATIVE_SSE = Kind("native", False), Kind("native", True)
CHAT_SEND = Kind("chat-send", False)
CATALOG = Kind("catalog", False)  # public reads: no key, no row
# 18 clients at once: JSON calls are quick, streams (echo-slow, 20 ms a token) are long.
CLIENTS = (
    (OPENAI_JSON,) * 3
    + (OPENAI_SSE,) * 2
    + (GEMINI_JSON,) * 3
    + (GEMINI_SSE,) * 2
    + (NATIVE_JSON,) * 3
    + (NATIVE_SSE,) * 2
    + (CHAT_SEND,) * 2
    + (CATALOG,)
)


@dataclass
class Tally:
    calls: int = 0
    answered: dict[str, Kind] = field(default_factory=dict)  # X-Request-Id -> the kind of call
    # chat/send answers: X-Request-Id -> the (conversation id, assistant message id) they gave.
    exchanges: dict[str, tuple[int, int]] = field(default_factory=dict)
    catalog_reads: int = 0
    # chat/send clients continue their own conversations: conversation id -> its answers' message ids, in order.
    conversations: dict[int, list[int]] = field(default_factory=dict)
    # Which conversation each chat/send client continues (by its place in CLIENTS), across the kills.
    continues: dict[int, int] = field(default_factory=dict)
    # Cleared just before each kill: answers that arrive while the server is up must be as documented.
    up: bool = True
    # Answers received while the server was up that were 5xx, or not in the envelope their surface promises.
    bad: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def crashing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    config = TEST_CONFIG.replace("usage_flush_seconds = 0.05", "usage_flush_seconds = 60\ncheckpoint_seconds = 0.3")
    with running_stack(tmp_path_factory.mktemp("crash"), config) as stack:
        yield stack


def call_of(kind: Kind, key: str) -> tuple[str, dict[str, Any] | None, dict[str, str]]:
    """The path, body (None: a GET) and headers of one call of this kind."""
    model = "echo-slow" if kind.stream else "echo-1"
    text = "one two three four five six"
    if kind is CATALOG:
        return "/api/models?q=echo", None, {}
    if kind is CHAT_SEND:
        return "/api/v1/chat/send", {"model_id": model, "message": text}, {"X-API-Key": key}
    if kind.surface == "gemini":
        method = "streamGenerateContent?alt=sse" if kind.stream else "generateContent"
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
        return f"/api/v1beta/models/{model}:{method}", body, {"x-goog-api-key": key}
    messages = [{"role": "user", "content": text}]
    path = CHAT if kind.surface == "openai" else NATIVE_CHAT
    return path, {"model": model, "stream": kind.stream, "messages": messages}, {"Authorization": f"Bearer {key}"}


def complete(kind: Kind, data: bytes) -> bool:
    """Whether the whole answer arrived, as its surface ends one."""
    if kind in (CHAT_SEND, CATALOG):
        envelope = json.loads(data)
        return envelope["success"] is True and envelope["data"] is not None
    if not kind.stream:
        answer = json.loads(data)
        return bool({"openai": "choices", "gemini": "candidates", "native": "content"}[kind.surface] in answer)
    if kind.surface != "gemini":
        return data.endswith(b"data: [DONE]\n\n") and b'"error"' not in data
    # Gemini streams have no terminator: the last event carries the usage and the finish reason.
    if not data.endswith(b"\r\n\r\n") or b'"error"' in data:
        return False
    last = json.loads(data[:-4].rsplit(b"\r\n\r\n", 1)[-1].removeprefix(b"data: "))
    return "usageMetadata" in last and bool(last["candidates"][0].get("finishReason"))


def as_documented(kind: Kind, status: int, data: bytes) -> bool:
    """No 5xx while the server is up, and the envelope for the catalog and chat/send (errors included)."""
    if status >= 500:
        return False
    if kind not in (CHAT_SEND, CATALOG):
        return True
    try:
        envelope = json.loads(data)
    except ValueError:
        return False
    return isinstance(envelope, dict) and envelope.get("success") is (status == 200)


async def client(session: aiohttp.ClientSession, stack: Stack, key: str, kind: Kind, tally: Tally, number: int) -> None:
    path, body, headers = call_of(kind, key)
    while True:
        tally.calls += 1
        conversation = tally.continues.get(number)  # chat/send: the one this client continues, once it has one
        if conversation is not None and body is not None:
            body = {**body, "conversation_id": conversation}
        up = tally.up
        try:
            method = "GET" if body is None else "POST"
            async with session.request(method, stack.http_base + path, json=body, headers=headers) as response:
                data = await response.read()
                request_id = response.headers.get("x-request-id", "")
        except (aiohttp.ClientError, ConnectionError):
            await asyncio.sleep(0.01)
            continue
        if up and tally.up and not as_documented(kind, response.status, data):
            tally.bad.append(f"{kind.label}: {response.status} {data[:200]!r}")
        if response.status != 200:
            await asyncio.sleep(0.01)
            continue
        if complete(kind, data):
            if kind is CATALOG:
                tally.catalog_reads += 1
                continue
            assert request_id and request_id not in tally.answered
            tally.answered[request_id] = kind
            if kind is CHAT_SEND:
                sent = json.loads(data)["data"]
                tally.exchanges[request_id] = (sent["conversation_id"], sent["assistant_message_id"])
                assert conversation in (None, sent["conversation_id"]), sent
                tally.continues[number] = conversation = sent["conversation_id"]
                tally.conversations.setdefault(conversation, []).append(sent["assistant_message_id"])


async def load_then_kill(stack: Stack, key: str, tally: Tally) -> None:
    """Runs the CLIENTS for LOAD_SECONDS, then kills the server with SIGKILL mid-load."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        tally.up = True
        clients = [
            asyncio.create_task(client(session, stack, key, kind, tally, number)) for number, kind in enumerate(CLIENTS)
        ]
        await asyncio.sleep(LOAD_SECONDS)
        assert stack.server is not None
        tally.up = False
        stack.server.kill()
        stack.server.wait(timeout=10)
        stack.server = None
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)


def test_every_completely_answered_call_survives_kill_9(crashing: Stack) -> None:
    stack = crashing
    account = stack.create_account("crash", credits=CREDITS)
    key = stack.create_key("crash", account)[1]
    tally = Tally()
    for kill in range(1, KILLS + 1):
        before = len(tally.answered)
        asyncio.run(load_then_kill(stack, key, tally))
        assert len(tally.answered) - before > 20, "too little load reached the server before the kill"

        # The store as the crash left it (sqlite3 replays the WAL on open).
        with connect_db(stack.db_path) as db:
            if not isinstance(stack.db_path, PgDatabase):
                assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            rows = {
                request_id: (count, surface)
                for request_id, count, surface in db.execute(
                    "SELECT request_id, COUNT(*), MAX(surface) FROM usage WHERE account_id = ? GROUP BY request_id",
                    [account],
                ).fetchall()
            }
            costs, statuses = db.execute(
                "SELECT COALESCE(SUM(cost), 0), COUNT(*) FROM usage WHERE account_id = ?", [account]
            ).fetchone()
            credits = db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()[0]
            messages = db.execute(
                "SELECT m.conversation_id, m.id, m.role FROM conversation_messages m JOIN conversations c"
                " ON c.id = m.conversation_id WHERE c.account_id = ? ORDER BY m.conversation_id, m.id",
                [account],
            ).fetchall()
        stored = {(conversation, message) for conversation, message, role in messages if role == "assistant"}
        lost = [ids for ids in tally.exchanges.values() if ids not in stored]
        assert not lost, f"kill {kill}: chat/send answers whose exchange was not stored: {lost[:5]}"
        assert not tally.bad, f"kill {kill}: {len(tally.bad)} answers while the server was up: {tally.bad[:5]}"
        for conversation, answers in tally.conversations.items():
            roles = [role for number, _, role in messages if number == conversation]
            kept = [message for number, message, role in messages if number == conversation and role == "assistant"]
            # Question, answer, question, answer...; the answers in the order the client got them. An exchange
            # stored as the kill came, before its answer went out, may be there unanswered: one per kill at most.
            assert roles == ["user", "assistant"] * (len(roles) // 2), (conversation, roles)
            assert answers == sorted(answers) and set(answers) <= set(kept), (conversation, answers, kept)
            assert 0 <= len(kept) - len(answers) <= kill, (conversation, answers, kept)
        missing = [request_id for request_id in tally.answered if request_id not in rows]
        assert not missing, f"kill {kill}: {len(missing)} answered calls have no usage row"
        assert all(count == 1 for count, _ in rows.values()), "a call has more than one row"
        wrong = {
            rid: (kind.surface, rows[rid][1]) for rid, kind in tally.answered.items() if rows[rid][1] != kind.surface
        }
        assert not wrong, f"rows under another surface's name: {wrong}"
        assert CREDITS * 1_000_000 - credits == costs, "the balance dropped by other than the rows' costs"
        answered = Counter(kind.label for kind in tally.answered.values())
        print(
            f"kill {kill}: {tally.calls} calls made, {len(tally.answered)} answered completely {dict(answered)}, "
            f"{statuses} rows, all answered found; {tally.catalog_reads} catalog reads answered; "
            f"chat/send conversations {[len(answers) for answers in tally.conversations.values()]} exchanges long"
        )
        stack.start_server()  # the same database opens and serves again

    # Every kind of call was answered completely, and so had its row checked, at least once.
    assert set(CLIENTS) - {CATALOG} <= set(tally.answered.values()), Counter(
        kind.label for kind in tally.answered.values()
    )
    assert tally.catalog_reads > 0
    # Both chat/send clients kept one conversation going across the kills.
    assert len(tally.conversations) == 2 and all(len(answers) > 1 for answers in tally.conversations.values())
    reply_ok = asyncio.run(one_call(stack, key))
    assert reply_ok


async def one_call(stack: Stack, key: str) -> bool:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_base + CHAT,
            json={"model": "echo-1", "messages": [{"role": "user", "content": "still here"}]},
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        return response.status == 200 and "choices" in await response.json()


async def cut_stream(stack: Stack, key: str) -> tuple[str, str]:
    """Reads a long stream for a while, then kills the server under it; the request id and the text received."""
    words = " ".join(f"word{n}" for n in range(400))
    received: list[str] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            stack.http_base + CHAT,
            json={"model": "echo-slow", "stream": True, "messages": [{"role": "user", "content": words}]},
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        assert response.status == 200
        request_id = response.headers["x-request-id"]
        # At least 1.5 s of it, and on until its first checkpoint row is committed (a loaded machine
        # may take longer to write one): what the kill then leaves behind is that checkpoint.
        loop = asyncio.get_running_loop()
        look, give_up = loop.time() + 1.5, loop.time() + 30
        async for line in response.content:
            if line.startswith(b"data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    received.append(choice["delta"].get("content") or "")
            if loop.time() > look:
                if loop.time() > give_up or _has_row(stack, request_id):
                    break
                look = loop.time() + 0.1
        assert stack.server is not None
        stack.server.kill()
        stack.server.wait(timeout=10)
        stack.server = None
    return request_id, "".join(received)


def _has_row(stack: Stack, request_id: str) -> bool:
    with connect_db(stack.db_path) as db:
        return db.execute("SELECT 1 FROM usage WHERE request_id = ?", [request_id]).fetchone() is not None


def test_a_stream_cut_by_kill_9_is_billed_for_what_it_delivered(crashing: Stack) -> None:
    stack = crashing
    account = stack.create_account("cut", credits=CREDITS)
    key = stack.create_key("cut", account)[1]
    request_id, received = asyncio.run(cut_stream(stack, key))
    try:
        with connect_db(stack.db_path) as db:
            row = db.execute(
                "SELECT status, error_code, completion_tokens, cost FROM usage WHERE request_id = ?", [request_id]
            ).fetchone()
            credits = db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()[0]
        assert row is not None, "the cut stream left no usage row"
        status, error_code, completion_tokens, cost = row
        assert (status, error_code) == (0, "in_progress")
        # Billed for delivered output up to its last checkpoint: something, never more than the client got.
        assert 0 < completion_tokens <= count_tokens(received)
        assert cost > 0
        assert CREDITS * 1_000_000 - credits == cost
    finally:
        stack.start_server()
