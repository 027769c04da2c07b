"""A real PostgreSQL 15 server for tests: initdb into a temp dir, pg_ctl on a free 127.0.0.1 port.

PostgreSQL refuses to run as root; when the tests run as root the server
runs as the `postgres` OS user (`runuser`), in a directory it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

__all__ = ["PgConnection", "PgDatabase", "PostgresServer", "connect_db", "postgres_bin", "run_query"]

# Debian's postgresql-15 package; newer majors work too.
_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
# The role the gateway connects as; its password is a secret the tests look for in logs and errors.
APP_ROLE = "modelway"


def postgres_bin() -> Path | None:
    """Where initdb and pg_ctl are, or None when PostgreSQL is not installed."""
    for directory in _BIN_DIRS:
        if Path(directory, "pg_ctl").exists() and Path(directory, "initdb").exists():
            return Path(directory)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on its own connection, from synchronous code (on a thread with its own loop,
    so it works also where an event loop is already running)."""

    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(run())).result(timeout=60)


@dataclass
class PostgresServer:
    """One running cluster. `database()` hands out a fresh database per stack or test."""

    bin_dir: Path
    root: Path
    port: int
    superuser_password: str
    app_password: str
    _created: int = field(default=0)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.superuser_password}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        return f"postgresql://{APP_ROLE}:{self.app_password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120, cwd=self.root)

    @classmethod
    def create(cls, bin_dir: Path) -> PostgresServer:
        # Not under pytest's tmp dir: that is root's, mode 0700, and the postgres user could not enter it.
        root = Path(tempfile.mkdtemp(prefix="modelway-pg-"))
        server = cls(bin_dir, root, _free_port(), secrets.token_hex(12), "pw-" + secrets.token_hex(12))
        password_file = root / "superuser-password"
        password_file.write_text(server.superuser_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
        server._run(
            str(bin_dir / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            "postgres",
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        server.start()
        run_query(server.admin_url(), f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{server.app_password}'")
        return server

    def start(self) -> None:
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                # Tests need no durability: a crash of the test machine loses the test run anyway.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=400",
                "-c shared_buffers=32MB",
            )
        )
        pg_ctl = str(self.bin_dir / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def database(self, prefix: str = "t") -> PgDatabase:
        """A new, empty database owned by the app role (the gateway creates its schema on start)."""
        self._created += 1
        name = f"{prefix}_{os.getpid()}_{self._created}"
        run_query(self.admin_url(), f'CREATE DATABASE "{name}" OWNER {APP_ROLE}')
        return PgDatabase(self.url(name))


@dataclass(frozen=True)
class PgDatabase:
    """One database of the test server: where a stack keeps its store, in place of a SQLite file."""

    url: str

    def __str__(self) -> str:
        return self.url


class Row(tuple[Any, ...]):
    """A row as sqlite3.Row gives it: by position and by column name."""

    _names: tuple[str, ...]

    def __new__(cls, values: tuple[Any, ...], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, index: Any) -> Any:  # type: ignore[override]
        if isinstance(index, str):
            return tuple.__getitem__(self, self._names.index(index))
        return tuple.__getitem__(self, index)

    def keys(self) -> list[str]:
        return list(self._names)


def _plain(value: Any) -> Any:
    # SUM() of integers is numeric in PostgreSQL; SQLite gives an int.
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


class _Cursor:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Any:
        return iter(self._rows)


class PgConnection:
    """The part of sqlite3.Connection the tests use (`execute` with `?` marks, `row_factory`), on PostgreSQL."""

    def __init__(self, url: str) -> None:
        self._url = url
        # Set to anything (the tests set sqlite3.Row): rows are also read by column name.
        self.row_factory: Any = None

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def close(self) -> None:
        return None

    def execute(self, sql: str, params: Any = ()) -> _Cursor:
        parts = sql.split("?")
        numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
        records = run_query(self._url, numbered, *params)
        rows: list[Any] = []
        for record in records:
            values = tuple(_plain(value) for value in record.values())
            rows.append(Row(values, tuple(record.keys())) if self.row_factory is not None else values)
        return _Cursor(rows)


def connect_db(target: Any) -> Any:
    """sqlite3.connect for a SQLite file, PgConnection for a test PostgreSQL database."""
    if isinstance(target, PgDatabase):
        return PgConnection(target.url)
    import sqlite3

    return sqlite3.connect(target)


def store_files(target: Any, workdir: Path) -> list[tuple[str, bytes]]:
    """What a store holds at rest, to search for secrets: a SQLite file with its WAL and shared
    memory, or a PostgreSQL database's every table as text (written to `workdir`)."""
    if isinstance(target, PgDatabase):
        tables = [
            row[0] for row in run_query(target.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        text = "\n".join(
            str(row[0]) for table in tables for row in run_query(target.url, f'SELECT t::text FROM "{table}" t')
        )
        return [("database dump", text.encode())]
    path = Path(target)
    return [(file.name, file.read_bytes()) for file in path.parent.glob(path.name + "*")]
