"""chat/send follow-ups on one conversation stay in order across server processes (`--workers 2`):
the store stores an exchange only after the message its history ended with, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import grpc
import pytest

from modelway.config import load_config
from modelway.edge import EdgeFiles, Envoy
from modelway.v1 import conversations_pb2, conversations_pb2_grpc
from tests.conftest import ROOT, TEST_CONFIG, Stack, _wait_for
from tests.real.postgres import connect_db
from tests.real.redis import RedisServer
from tests.shared.test_scale_out import serving_workers

WORKERS = 2
# echo-slow speaks a word every 20 ms: a follow-up of this many words is answered in about a second,
# so two sent together are both under way when the first one is stored.
WORDS = 40
LOSER = "Another message to this conversation was answered while this one was; it was not stored or charged."


@dataclass
class Pair:
    stack: Stack  # its http_port: an Envoy in front of worker 1 alone
    envoy: Envoy
    grpc_base: int

    def rows(self, query: str, *args: object) -> list[tuple[object, ...]]:
        with connect_db(self.stack.db_path) as db:
            return list(db.execute(query, args).fetchall())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, shared_store_url: str) -> Iterator[Pair]:
    """`modelway serve --workers 2` on one store and Redis; an Envoy in front of worker 1 alone, so that a
    REST call is known to race a gRPC call sent straight to worker 0."""
    workdir = tmp_path_factory.mktemp("pair")
    with serving_workers(workdir, TEST_CONFIG, redis_server, shared_store_url) as (stack, _):
        envoy = None
        try:
            config = load_config(stack.config_path, stack.env)
            server = config.server
            second = replace(server, grpc_port=server.grpc_port + 1, ops_port=server.ops_port + 1, workers=1)
            envoy = Envoy.start(second, EdgeFiles.in_repo(ROOT, workdir), drain_seconds=1, base_id=stack.http_port)
            _wait_for(envoy.ready, "Envoy", stack)
            yield Pair(stack, envoy, server.grpc_port)
        finally:
            if envoy is not None:
                envoy.stop()


async def _send(
    target: str, key: str, message: str, conversation_id: int = 0
) -> conversations_pb2.SendMessageResponse | grpc.aio.AioRpcError:
    """chat/send on one worker (native gRPC): its answer, or its error."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = conversations_pb2_grpc.ConversationsServiceStub(channel)
        request = conversations_pb2.SendMessageRequest(
            model_id="echo-slow", message=message, conversation_id=conversation_id
        )
        try:
            return await stub.SendMessage(request, metadata=(("x-api-key", key),), timeout=60)
        except grpc.aio.AioRpcError as error:
            return error


async def _until_ready(pair: Pair) -> int:
    """A new conversation (also: waits until the shared state answers on both workers); its id."""
    for _ in range(300):
        replies = [await _send(f"127.0.0.1:{pair.grpc_base + i}", pair.stack.api_key, "hello") for i in range(WORKERS)]
        if all(isinstance(reply, conversations_pb2.SendMessageResponse) for reply in replies):
            first = replies[0]
            assert isinstance(first, conversations_pb2.SendMessageResponse)
            return int(first.conversation_id)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the workers did not answer: {replies}")


def test_two_follow_ups_on_two_workers_at_once_are_stored_in_order_or_refused(pair: Pair) -> None:
    key = pair.stack.api_key

    async def race() -> tuple[int, list[conversations_pb2.SendMessageResponse | grpc.aio.AioRpcError]]:
        conversation = await _until_ready(pair)
        sends = [
            _send(f"127.0.0.1:{pair.grpc_base + i}", key, f"follow-up {i} " + "word " * WORDS, conversation)
            for i in range(WORKERS)
        ]
        return conversation, list(await asyncio.gather(*sends))

    conversation, replies = asyncio.run(race())
    answered = [r for r in replies if isinstance(r, conversations_pb2.SendMessageResponse)]
    refused = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
    # Both were answered upstream from the same two-message history: only the first stored may stay.
    assert len(answered) == 1 and len(refused) == 1, replies
    assert refused[0].code() is grpc.StatusCode.ABORTED
    assert refused[0].details().startswith(LOSER), refused[0].details()
    messages = pair.rows(
        "SELECT role, content FROM conversation_messages WHERE conversation_id = ? ORDER BY id", conversation
    )
    assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2][1] == answered[0].message and messages[3][1] == answered[0].response
    # The refused call was recorded, and charged nothing; the stored one was.
    rows = pair.rows("SELECT status, cost FROM usage WHERE surface = 'chat-send' ORDER BY created_at")
    assert rows[-2:] in ([(200, rows[-2][1]), (409, 0)], [(409, 0), (200, rows[-1][1])]), rows[-2:]
    assert all(int(cost) > 0 for status, cost in rows if status == 200)  # type: ignore[call-overload]


def test_a_refused_follow_up_through_envoy_is_a_409_in_chat_sends_shape(pair: Pair) -> None:
    """A long follow-up over REST (worker 1) and a short one over gRPC (worker 0), the short one sent
    just after: the short one is stored first, the long one refused; sent again, it follows it."""
    key = pair.stack.api_key
    url = f"http://127.0.0.1:{pair.stack.http_port}/api/v1/chat/send"

    async def send(session: aiohttp.ClientSession, message: str, conversation: int) -> tuple[int, dict[str, Any]]:
        body = {"model_id": "echo-slow", "message": message, "conversation_id": conversation}
        async with session.post(url, json=body, headers={"X-API-Key": key}) as response:
            return response.status, json.loads(await response.read())

    async def short_after_a_moment(conversation: int) -> conversations_pb2.SendMessageResponse | grpc.aio.AioRpcError:
        await asyncio.sleep(0.05)
        return await _send(f"127.0.0.1:{pair.grpc_base}", key, "short " * 5, conversation)

    async def race() -> tuple[int, tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
        conversation = await _until_ready(pair)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            # On a loaded machine the REST call may read the history only after the short one was stored
            # (then it follows it, 200): a few rounds, until it is refused.
            for _ in range(5):
                (status, body), short = await asyncio.gather(
                    send(session, "long " * 60, conversation), short_after_a_moment(conversation)
                )
                assert isinstance(short, conversations_pb2.SendMessageResponse), short
                if status == 409:
                    return conversation, (status, body), await send(session, "long " * 60, conversation)
                assert status == 200, body
        raise AssertionError("the REST follow-up was never refused")

    conversation, (status, refused), again = asyncio.run(race())
    assert status == 409
    assert refused == {"success": False, "message": refused["message"]}
    assert str(refused["message"]).startswith(LOSER)
    assert again[0] == 200 and again[1]["success"] is True
    messages = pair.rows(
        "SELECT role, content FROM conversation_messages WHERE conversation_id = ? ORDER BY id", conversation
    )
    # Strict turns, the short follow-up stored before the long one sent again, which came last.
    assert [role for role, _ in messages] == ["user", "assistant"] * (len(messages) // 2)
    assert messages[-4][1] == "short " * 5 and messages[-2][1] == "long " * 60
