"""PostgreSQL stopped for 5 s under load, with 3 workers behind 2 Envoys sharing one Redis: the whole
charge cycle (reserve in Redis, settle, move the charge, write row and charge in one transaction,
undo the move when the write fails) loses no row and no credit."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import aiohttp
import redis

from tests.real.postgres import PostgresServer
from tests.real.redis import RedisServer
from tests.shared.test_scale_out import CONFIG, Scaled, run_scaled

# Rows a worker keeps while the store is away: small, so that the outage fills every worker's queue.
QUEUE_BOUND = 2
# More callers than the workers keep rows for (3 x QUEUE_BOUND): the rest are refused meanwhile.
CLIENTS = 12
BODY = {"model": "echo-1", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 4}


# status, x-request-id, retry-after, error code, when the call was sent and answered (monotonic)
Answer = tuple[int, str, str, str, float, float]


async def _load(scaled: Scaled, key: str, stop: threading.Event, answers: list[Answer], clients: int) -> None:
    """`clients` callers in a loop, alternating between the two Envoys, until `stop`."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def client(index: int) -> None:
            port = scaled.http_ports[index % 2]
            while not stop.is_set():
                sent = time.monotonic()
                async with session.post(
                    f"http://127.0.0.1:{port}/api/v1/chat/completions",
                    json=BODY,
                    headers={"Authorization": f"Bearer {key}"},
                ) as reply:
                    body = await reply.json(content_type=None)
                    code = body["error"]["code"] if reply.status != 200 else ""
                    retry_after = reply.headers.get("retry-after", "")
                    answer = (reply.status, reply.headers["x-request-id"], retry_after, code, sent, time.monotonic())
                    answers.append(answer)
                if reply.status == 503:
                    await asyncio.sleep(0.05)  # a client that backs off a little (not the whole Retry-After)

        await asyncio.gather(*(client(i) for i in range(clients)))


def _rows(scaled: Scaled, account: str, answered: int, timeout: float = 30) -> list[tuple[object, ...]]:
    """The account's usage rows, once at least `answered` of them are written (the queues drained)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = scaled.rows("SELECT request_id, status, cost, error_code FROM usage WHERE account_id = ?", account)
        if sum(1 for row in rows if row[1] == 200) >= answered or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_postgres_stopped_for_5s_under_load_across_workers_loses_no_row_and_no_credit(
    tmp_path: Path, own_postgres: PostgresServer, redis_server: RedisServer
) -> None:
    config = CONFIG.replace(
        "usage_flush_seconds = 0.05", f"usage_flush_seconds = 0.05\nmax_queued_rows = {QUEUE_BOUND}"
    )
    assert f"max_queued_rows = {QUEUE_BOUND}" in config
    store_url = own_postgres.database("outage").url
    with run_scaled(tmp_path, redis_server, store_url, config) as scaled:
        stack = scaled.stack
        account = stack.create_account("outage", credits=1000)
        key = stack.create_key("outage", account)[1]
        start = scaled.balance(account)
        stop = threading.Event()
        answers: list[Answer] = []
        load = threading.Thread(target=lambda: asyncio.run(_load(scaled, key, stop, answers, CLIENTS)))
        load.start()
        try:
            time.sleep(2)
            before_outage = len(answers)
            own_postgres.stop("fast")
            stopped = time.monotonic()
            time.sleep(5)
            during_outage = len(answers) - before_outage
            own_postgres.start()
            back = time.monotonic()
            time.sleep(4)
        finally:
            stop.set()
            load.join(timeout=90)
        statuses = [status for status, *_ in answers]
        answered = {request_id for status, request_id, *_ in answers if status == 200}
        refused = [answer for answer in answers if answer[0] == 503]
        # Recovery: the first call sent after PostgreSQL was back and answered 200 (its row committed).
        recovered = min(done for status, _, _, _, sent, done in answers if status == 200 and sent >= back) - back
        served_meanwhile = sum(1 for status, *_, done in answers if status == 200 and stopped <= done < back)
        print(
            f"calls {len(answers)}: answered {len(answered)}, refused {len(refused)}; before the outage "
            f"{before_outage}, during it {during_outage} of which {served_meanwhile} answered (stopped "
            f"{back - stopped:.1f}s); a call sent after PostgreSQL was back answered {recovered:.2f}s after it"
        )
        assert before_outage > 10 and set(statuses) <= {200, 503}, sorted(set(statuses))
        # Past the bound of rows each worker keeps, calls are refused, in the OpenAI shape, with Retry-After.
        assert refused, "the outage filled no worker's queue"
        assert {(retry_after, code) for _, _, retry_after, code, _, _ in refused} == {("5", "store_unavailable")}

        rows = _rows(scaled, account, len(answered))
        # One row per answered call, none lost, none doubled.
        written = [row for row in rows if row[1] == 200]
        assert sorted(str(row[0]) for row in written) == sorted(answered)
        assert all(int(row[2]) > 0 for row in written)  # type: ignore[call-overload]
        # A refused call used nothing: if it left a row (the queue had drained by its end), it cost nothing.
        assert all(row[1] == 503 and row[3] == "store_unavailable" and row[2] == 0 for row in rows if row[1] != 200)
        end = scaled.balance(account)
        assert end >= 0
        assert start - end == sum(int(row[2]) for row in rows)  # type: ignore[call-overload]
        # Redis agrees with the store: the same balance, and nothing held once every call settled.
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            epoch = client.get("mw:epoch")
            held = client.hgetall(f"mw:{epoch}:a:{account}")
        finally:
            client.close()
        assert (int(held["bal"]), int(held.get("held", 0))) == (end, 0), held
