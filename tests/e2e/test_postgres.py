"""The PostgreSQL store on a real server: migrations, cross-process changes, outages, the queue bound, secrecy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from modelway.store.postgres import PostgresStore
from modelway.store.schema import MIGRATIONS
from tests.conftest import TEST_CONFIG, Stack, running_stack
from tests.e2e.http import request
from tests.real.postgres import PostgresServer, connect_db, run_query

CHAT = "/api/v1/chat/completions"
BODY = {"model": "echo-1", "max_tokens": 4, "messages": [{"role": "user", "content": "one two three"}]}


def test_migrations_are_idempotent_and_concurrent_starts_are_safe(postgres: PostgresServer) -> None:
    url = postgres.database("migrate").url

    async def open_many(count: int) -> list[int]:
        stores = [PostgresStore(url) for _ in range(count)]
        # All at once, each on its own connection: the advisory lock lines them up.
        await asyncio.gather(*(store.open() for store in stores))
        try:
            return [await store.schema_version() for store in stores]
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    latest = MIGRATIONS[-1][0]
    assert asyncio.run(open_many(6)) == [latest] * 6
    assert asyncio.run(open_many(2)) == [latest] * 2  # again, on a migrated database: nothing to do
    versions = [row[0] for row in run_query(url, "SELECT version FROM schema_version ORDER BY version")]
    assert versions == [version for version, _ in MIGRATIONS]

    # Separate processes too (the CLI migrates on open), started together on a fresh database.
    fresh = postgres.database("migrate").url
    config = Path(postgres.root.parent, f"mw-{postgres.port}.toml")
    config.write_text(TEST_CONFIG)
    env = {"MODELWAY_STORE_URL": fresh, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "modelway", "--config", str(config), "accounts", "list"]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err.decode()
    fresh_versions = [row[0] for row in run_query(fresh, "SELECT version FROM schema_version ORDER BY version")]
    assert fresh_versions == [version for version, _ in MIGRATIONS]  # each applied once


def test_data_version_moves_with_another_process_change(postgres: PostgresServer) -> None:
    url = postgres.database("revision").url

    async def check() -> None:
        async with PostgresStore(url) as watcher, PostgresStore(url) as other:
            from modelway.store import AccountRecord

            before = await watcher.data_version()
            await other.insert_account(AccountRecord("acct_x", "x", "tester", 1), 100)
            after_insert = await watcher.data_version()
            assert after_insert != before
            await other.add_credits("acct_x", 5)
            assert await watcher.data_version() != after_insert
            # A read moves nothing.
            settled = await watcher.data_version()
            await other.balances()
            assert await watcher.data_version() == settled

    asyncio.run(check())


@pytest.fixture
def pg_stack(tmp_path: Path, postgres: PostgresServer) -> Iterator[Stack]:
    # The default refresh (1 s), as operators run it.
    config = TEST_CONFIG.replace("refresh_seconds = 0.2", "refresh_seconds = 1.0")
    with running_stack(tmp_path, config, postgres=postgres) as stack:
        yield stack


def test_a_key_deleted_by_another_process_fails_within_a_second(pg_stack: Stack) -> None:
    stack = pg_stack
    key_id, secret = stack.create_key("doomed")
    headers = {"Authorization": f"Bearer {secret}"}
    assert request(stack.http_port, "POST", CHAT, BODY, headers).status == 200
    stack.cli("keys", "delete", key_id)  # another process, straight to PostgreSQL
    deleted = time.monotonic()
    while (status := request(stack.http_port, "POST", CHAT, BODY, headers).status) == 200:
        assert time.monotonic() - deleted < 1.5, "the deleted key still works"
        time.sleep(0.05)
    assert status == 401
    assert time.monotonic() - deleted < 1.5


def test_the_password_is_never_shown(tmp_path: Path, postgres: PostgresServer) -> None:
    config = tmp_path / "modelway.toml"
    config.write_text(TEST_CONFIG)
    password = postgres.app_password
    base = {"PATH": "/usr/bin:/bin"}

    def cli(url: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "modelway", "--config", str(config), "accounts", "list"]
        return subprocess.run(command, env={**base, "MODELWAY_STORE_URL": url}, capture_output=True, text=True)

    # Not a PostgreSQL URL: a config error that names the URL with its password masked.
    wrong_scheme = cli(f"mysql://modelway:{password}@127.0.0.1:{postgres.port}/x")
    assert wrong_scheme.returncode != 0 and "postgresql://" in wrong_scheme.stderr
    assert "***" in wrong_scheme.stderr and password not in wrong_scheme.stdout + wrong_scheme.stderr
    # Nothing listening there.
    unreachable = cli(f"postgresql://modelway:{password}@127.0.0.1:1/x")
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("modelway: cannot reach PostgreSQL")
    assert "Traceback" not in unreachable.stderr and "modelway:***@" in unreachable.stderr
    assert password not in unreachable.stdout + unreachable.stderr
    # A wrong password: PostgreSQL's own words, and neither password.
    refused = cli(f"postgresql://modelway:not-{password}@127.0.0.1:{postgres.port}/postgres")
    assert refused.returncode == 2 and "password authentication failed" in refused.stderr
    assert password not in refused.stdout + refused.stderr
    # Both stores named: one clear line.
    both = subprocess.run(
        [sys.executable, "-m", "modelway", "--config", str(config), "accounts", "list"],
        env={**base, "MODELWAY_STORE_URL": postgres.url("x"), "MODELWAY_DB": str(tmp_path / "x.db")},
        capture_output=True,
        text=True,
    )
    assert both.returncode != 0 and "not both" in both.stderr and password not in both.stderr


async def _load(port: int, key: str, stop: threading.Event, answers: list[tuple[int, str]], workers: int) -> None:
    """Calls in a loop from `workers` clients until `stop`; (status, request id) of each answer."""
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while not stop.is_set():
                async with session.post(
                    f"http://127.0.0.1:{port}{CHAT}", json=BODY, headers={"Authorization": f"Bearer {key}"}
                ) as reply:
                    await reply.read()
                    answers.append((reply.status, reply.headers["x-request-id"]))

        await asyncio.gather(*(worker() for _ in range(workers)))


def _wait_for_rows(stack: Stack, account: str, count: int, timeout: float = 20) -> list[tuple[str, int, int]]:
    deadline = time.monotonic() + timeout
    while True:
        with connect_db(stack.db_path) as db:
            rows = db.execute("SELECT request_id, status, cost FROM usage WHERE account_id = ?", [account]).fetchall()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_postgres_stopped_for_five_seconds_mid_load_loses_no_row(tmp_path: Path, own_postgres: PostgresServer) -> None:
    with running_stack(tmp_path, TEST_CONFIG, postgres=own_postgres) as stack:
        credits = 1000.0
        account = stack.create_account("outage", credits=credits)
        key = stack.create_key("outage", account)[1]
        stop = threading.Event()
        answers: list[tuple[int, str]] = []
        load = threading.Thread(target=lambda: asyncio.run(_load(stack.http_port, key, stop, answers, 6)))
        load.start()
        try:
            time.sleep(2)
            before_outage = len(answers)
            own_postgres.stop("fast")
            time.sleep(5)
            during_outage = len(answers) - before_outage
            own_postgres.start()
            time.sleep(3)
        finally:
            stop.set()
            load.join(timeout=60)
        assert before_outage > 10 and during_outage > 0, (before_outage, during_outage)
        assert {status for status, _ in answers} == {200}, sorted({s for s, _ in answers})
        rows = _wait_for_rows(stack, account, len(answers))
        # One row per answered call, none lost, none doubled.
        assert sorted(request_id for request_id, _, _ in rows) == sorted(request_id for _, request_id in answers)
        assert all(status == 200 and cost > 0 for _, status, cost in rows)
        with connect_db(stack.db_path) as db:
            balance = db.execute("SELECT credits FROM accounts WHERE id = ?", [account]).fetchone()[0]
        assert balance == round(credits * 1_000_000) - sum(cost for _, _, cost in rows)
        log = (stack.workdir / "server.log").read_text()
        assert own_postgres.app_password not in log


def test_a_full_queue_refuses_calls_with_503_and_reads_fail_cleanly(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    config = TEST_CONFIG.replace("usage_flush_seconds = 0.05", "usage_flush_seconds = 0.05\nmax_queued_rows = 4")
    with running_stack(tmp_path, config, postgres=own_postgres) as stack:
        account = stack.create_account("bounded", credits=1000)
        key = stack.create_key("bounded", account)[1]
        headers = {"Authorization": f"Bearer {key}"}
        assert request(stack.http_port, "POST", CHAT, BODY, headers).status == 200
        own_postgres.stop("fast")
        try:
            # Served while the queue has room (each waits, bounded, for a commit that cannot come).
            served: list[int] = []
            callers = [
                threading.Thread(
                    target=lambda: served.append(request(stack.http_port, "POST", CHAT, BODY, headers).status)
                )
                for _ in range(4)
            ]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(timeout=30)
            assert served == [200] * 4
            # Now 4 rows wait: a new call is refused rather than served unrecorded, on every surface.
            refused = request(stack.http_port, "POST", CHAT, BODY, headers)
            assert refused.status == 503, refused.body
            assert refused.headers["Retry-After"] == "5"
            assert refused.json()["error"]["code"] == "store_unavailable"
            native_body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
            native = request(stack.http_port, "POST", "/api/v1/ai/chat", native_body, headers)
            assert native.status == 503, native.body
            assert native.json()["error"]["code"] == "SERVICE_UNAVAILABLE", native.body
            assert native.headers["Retry-After"]
            # Reads that need the store: a clean 503, not a 500.
            usage = request(stack.http_port, "GET", "/api/v1/api-usage", None, headers)
            assert usage.status == 503 and usage.headers["Retry-After"] == "5", usage.body
            assert usage.json()["error"]["code"] == "store_unavailable"
            created = request(stack.http_port, "POST", "/api/v1/api-keys", {"name": "new"}, headers)
            assert created.status == 503, created.body
        finally:
            own_postgres.start()
        # Back: the queue drains and calls are served again.
        deadline = time.monotonic() + 15
        while (status := request(stack.http_port, "POST", CHAT, BODY, headers).status) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        rows = _wait_for_rows(stack, account, 6)
        statuses = sorted(status for _, status, _ in rows)
        # The 5 served calls and the last; the refused ones cost nothing and left no row.
        assert statuses.count(200) >= 6 and all(status in (200, 503) for status in statuses)
        assert own_postgres.app_password not in (stack.workdir / "server.log").read_text()


def test_usage_rows_do_not_move_the_data_version(postgres: PostgresServer) -> None:
    url = postgres.database("revision_usage").url

    async def check() -> None:
        async with PostgresStore(url) as watcher, PostgresStore(url) as writer:
            from modelway.store import AccountRecord, UsageRecord

            await writer.insert_account(AccountRecord("acct_u", "u", "tester", 1), 1000)
            before = await watcher.data_version()
            # A usage batch charges the account: the keys and plans every worker caches did not change.
            row = UsageRecord("req_u", "acct_u", "", "openai", "m", "p", 1, 2, 10, 4, 200, "", 1.0)
            await writer.record_calls([row], {}, {"acct_u": 10})
            assert (await writer.balances())["acct_u"] == 990
            assert await watcher.data_version() == before

    asyncio.run(check())
