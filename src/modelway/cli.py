"""Command line: serve, the all-in-one dev runner, accounts and keys administration, Envoy config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelway.app import serve
from modelway.config import ALL_PERMISSIONS, DEFAULT_PERMISSIONS, MICRO, Config, ConfigError, load_config
from modelway.core.key_admin import check_key_count, key_name
from modelway.core.keys import IssuedKey, issue_key
from modelway.edge import EdgeFiles, render_envoy_config, start_envoy
from modelway.errors import GatewayError
from modelway.store import AccountRecord, KeyRecord, SqliteStore

__all__ = ["main"]


class CliError(Exception):
    """A mistake in what the operator asked for; printed without a traceback."""


@dataclass(frozen=True, slots=True)
class KeyOptions:
    account_id: str
    name: str
    permissions: tuple[str, ...]
    expires_in_days: float | None = None
    rate_limit: int | None = None
    daily_token_budget: int | None = None
    allowed_models: tuple[str, ...] = ()


async def create_account(config: Config, name: str, plan: str, credits: float) -> AccountRecord:
    config.plan(plan)  # ConfigError for an unknown plan
    account = AccountRecord(id="acct_" + secrets.token_hex(12), name=name, plan=plan, created_at=int(time.time()))
    async with SqliteStore(config.store.path) as store:
        await store.insert_account(account, round(credits * MICRO))
    return account


async def create_key(config: Config, options: KeyOptions) -> IssuedKey:
    """A key made by the operator: any permission and limit, but the same name rule and plan key count as the API."""
    unknown = [p for p in options.permissions if p not in ALL_PERMISSIONS]
    if unknown:
        raise CliError(f"unknown permission(s) {', '.join(unknown)}; known: {', '.join(ALL_PERMISSIONS)}")
    now = int(time.time())
    async with SqliteStore(config.store.path) as store:
        account = next((a for a in await store.list_accounts() if a.id == options.account_id), None)
        if account is None:
            raise CliError(f"no account {options.account_id}")
        owned = sum(1 for key in await store.list_keys() if key.account_id == account.id)
        try:
            name = key_name(options.name)
            check_key_count(config.plan(account.plan), owned)
        except GatewayError as exc:
            raise CliError(exc.message) from None
        issued = issue_key(
            options.account_id,
            name,
            prefix=config.keys.prefix,
            now=now,
            permissions=options.permissions,
            expires_at=None if options.expires_in_days is None else now + int(options.expires_in_days * 86400),
            rate_limit=options.rate_limit,
            daily_token_budget=options.daily_token_budget,
            allowed_models=options.allowed_models,
        )
        await store.insert_key(issued.record)
    return issued


async def _accounts(config: Config) -> list[tuple[AccountRecord, int]]:
    async with SqliteStore(config.store.path) as store:
        balances = await store.balances()
        return [(account, balances.get(account.id, 0)) for account in await store.list_accounts()]


async def _add_credits(config: Config, account_id: str, credits: float) -> int:
    async with SqliteStore(config.store.path) as store:
        balance = await store.add_credits(account_id, round(credits * MICRO))
    if balance is None:
        raise CliError(f"no account {account_id}")
    return balance


async def _keys(config: Config) -> list[KeyRecord]:
    async with SqliteStore(config.store.path) as store:
        return await store.list_keys()


async def _delete_key(config: Config, key_id: str) -> bool:
    async with SqliteStore(config.store.path) as store:
        return await store.delete_key(key_id)


async def _bootstrap(config: Config) -> str | None:
    """On an empty store: an operator account with credits and a key that may do everything."""
    if await _accounts(config):
        return None
    account = await create_account(config, "operator", config.bootstrap_plan, config.bootstrap.credits)
    issued = await create_key(config, KeyOptions(account.id, "operator", ALL_PERMISSIONS))
    return issued.secret


def _up(config: Config, root: Path) -> int:
    """`make run`: a first account and key if the store is empty, Envoy in front, the server here."""
    build = root / "build"
    build.mkdir(exist_ok=True)
    envoy_yaml = build / "envoy.yaml"
    envoy_yaml.write_text(render_envoy_config(config.server, EdgeFiles.in_repo(root)))
    base = f"http://{config.server.http_host}:{config.server.http_port}"
    secret = asyncio.run(_bootstrap(config))
    if secret is None:
        secret = "$MODELWAY_KEY"
        print("The store already has accounts; make a key with: .venv/bin/python -m modelway keys create --help")
    else:
        print(f"Created an operator account and its first API key (shown once, keep it):\n\n    {secret}\n")
    print(f"REST (OpenAI-compatible): {base}/api/v1")
    print(f"gRPC (native and via Envoy): {config.server.grpc_host}:{config.server.grpc_port} and {base[7:]}")
    print(
        f"Try:\n    curl -s {base}/api/v1/chat/completions -H 'Authorization: Bearer {secret}' "
        "-H 'Content-Type: application/json' "
        """-d '{"model":"echo-1","messages":[{"role":"user","content":"Hello!"}]}'\n"""
    )
    print("Ctrl-C stops both.", flush=True)
    envoy = start_envoy(envoy_yaml, log_path=build / "envoy.log")
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
    return 0


def _credits(micro: int) -> str:
    return f"{micro / MICRO:,.6f}".rstrip("0").rstrip(".")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelway", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("MODELWAY_CONFIG", "modelway.toml"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gRPC server")
    up = commands.add_parser("up", help="first account and key if none, then Envoy and the server")
    up.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (envoy/ and build/)")
    envoy_config = commands.add_parser("envoy-config", help="print the rendered Envoy configuration")
    envoy_config.add_argument("--root", type=Path, default=Path.cwd())

    accounts = commands.add_parser("accounts", help="accounts and credits").add_subparsers(dest="action", required=True)
    create_account_ = accounts.add_parser("create", help="create an account; prints its id")
    create_account_.add_argument("--name", required=True)
    create_account_.add_argument("--plan", help="a plan from the configuration (default: limits.default_plan)")
    create_account_.add_argument("--credits", type=float, default=0.0)
    accounts.add_parser("list", help="accounts with their plan and balance")
    credit = accounts.add_parser("add-credits", help="add (or, negative, remove) credits")
    credit.add_argument("id")
    credit.add_argument("credits", type=float)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--account", required=True, help="the owning account id (acct_...)")
    create.add_argument("--name", required=True)
    create.add_argument("--permissions", type=_csv, default=DEFAULT_PERMISSIONS, help="comma-separated")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--rate-limit", type=int, help="requests per minute instead of the plan's")
    create.add_argument("--daily-token-budget", type=int, help="tokens per UTC day instead of the plan's")
    create.add_argument("--models", type=_csv, default=(), help="comma-separated allow-list")
    keys.add_parser("list", help="list keys (never their secrets)")
    delete = keys.add_parser("delete", help="delete a key")
    delete.add_argument("id")
    return parser


def _run(args: argparse.Namespace, config: Config) -> int:
    command = args.command if args.command in ("serve", "up", "envoy-config") else f"{args.command} {args.action}"
    if command == "serve":
        asyncio.run(serve(config))
    elif command == "up":
        return _up(config, args.root)
    elif command == "envoy-config":
        print(render_envoy_config(config.server, EdgeFiles.in_repo(args.root)))
    elif command == "accounts create":
        account = asyncio.run(create_account(config, args.name, args.plan or config.limits.default_plan, args.credits))
        print(f"id: {account.id}")
    elif command == "accounts list":
        for account, balance in asyncio.run(_accounts(config)):
            print(f"{account.id}\t{account.name}\t{account.plan}\t{_credits(balance)} credits")
    elif command == "accounts add-credits":
        print(f"balance: {_credits(asyncio.run(_add_credits(config, args.id, args.credits)))}")
    elif command == "keys create":
        options = KeyOptions(
            args.account,
            args.name,
            args.permissions,
            args.expires_in_days,
            args.rate_limit,
            args.daily_token_budget,
            args.models,
        )
        issued = asyncio.run(create_key(config, options))
        print(f"id:     {issued.record.id}\nsecret: {issued.secret}\n(the secret is shown only now)")
    elif command == "keys list":
        for key in asyncio.run(_keys(config)):
            state = "enabled" if key.is_enabled else "disabled"
            print(f"{key.id}\t{key.account_id}\t{key.name}\t...{key.hint}\t{state}\t{','.join(key.permissions)}")
    elif not asyncio.run(_delete_key(config, args.id)):
        raise CliError(f"no key {args.id}")
    else:
        print(f"deleted {args.id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args, load_config(args.config))
    except (ConfigError, CliError) as exc:
        print(f"modelway: {exc}", file=sys.stderr)
        return 2
