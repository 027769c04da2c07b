"""Command line: serve, the all-in-one dev runner, accounts and keys administration, Envoy config."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modelway.app import Gateway, StartupError, check_ports, run, run_serving, serve
from modelway.config import ALL_PERMISSIONS, DEFAULT_PERMISSIONS, MICRO, Config, ConfigError, load_config
from modelway.core.key_admin import check_key_count, key_name
from modelway.core.keys import IssuedKey, issue_key
from modelway.edge import EdgeError, EdgeFiles, Envoy, check_workdir, render_envoy_config
from modelway.errors import GatewayError
from modelway.ops import configure_logging
from modelway.ops.http import NotReady, wait_until_ready
from modelway.scale import (
    Told,
    check_worker_ports,
    run_workers,
    serve_workers,
    shared_add_credits,
    shared_keys_changed,
)
from modelway.store import AccountRecord, KeyRecord, StoreUnavailable, open_store
from modelway.workers import needs_shared_state

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
    async with open_store(config.store) as store:
        await store.insert_account(account, round(credits * MICRO))
    return account


async def create_key(config: Config, options: KeyOptions) -> IssuedKey:
    """A key made by the operator: any permission and limit, but the same name rule and plan key count as the API."""
    unknown = [p for p in options.permissions if p not in ALL_PERMISSIONS]
    if unknown:
        raise CliError(f"unknown permission(s) {', '.join(unknown)}; known: {', '.join(ALL_PERMISSIONS)}")
    now = int(time.time())
    async with open_store(config.store) as store:
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
    if config.shared.redis_url:
        await shared_keys_changed(config.shared)
    return issued


async def _accounts(config: Config) -> list[tuple[AccountRecord, int]]:
    async with open_store(config.store) as store:
        balances = await store.balances()
        return [(account, balances.get(account.id, 0)) for account in await store.list_accounts()]


async def _add_credits(config: Config, account_id: str, credits: float) -> int:
    amount = round(credits * MICRO)
    async with open_store(config.store) as store:
        if not config.shared.redis_url:
            change = await store.add_credits(account_id, amount)
        else:
            shared = await shared_add_credits(config.shared, store, account_id, amount)
            if shared.told is Told.REFUSED:
                raise CliError(
                    f"credits not removed: Redis ({config.shared.shown_url}) is unreachable, and running servers "
                    "would go on spending them; try again when it answers"
                )
            change = shared.change
            if change is not None and shared.told is not Told.NOW:
                print(f"modelway: credits changed in the store; running servers: {shared.told.value}", file=sys.stderr)
    if change is None:
        raise CliError(f"no account {account_id}")
    return change.after


async def _keys(config: Config) -> list[KeyRecord]:
    async with open_store(config.store) as store:
        return await store.list_keys()


async def _delete_key(config: Config, key_id: str) -> bool:
    async with open_store(config.store) as store:
        deleted = await store.delete_key(key_id)
    if deleted and config.shared.redis_url:
        # Every server stops taking it at once (their periodic refresh would, within store.refresh_seconds).
        await shared_keys_changed(config.shared)
    return deleted


async def _bootstrap(config: Config) -> str | None:
    """On an empty store: an operator account with credits and a key that may do everything."""
    if await _accounts(config):
        return None
    account = await create_account(config, "operator", config.bootstrap_plan, config.bootstrap.credits)
    issued = await create_key(config, KeyOptions(account.id, "operator", ALL_PERMISSIONS))
    return issued.secret


async def _edge_ready(config: Config, envoy: Envoy, log: Path, timeout: float = 30.0) -> None:
    """Waits until a request through Envoy finds the gateway ready: GET /readyz answers 200."""
    server = config.server

    def ended() -> str | None:
        code = envoy.process.poll()
        return None if code is None else f"Envoy exited with status {code}"

    try:
        await wait_until_ready(f"http://{server.http_host}:{server.http_port}/readyz", timeout, ended)
    except NotReady as exc:
        raise StartupError(f"{exc} (see {log})") from None
    except TimeoutError:
        raise StartupError(
            f"the gateway did not become ready through Envoy within {timeout:.0f}s (see {log})"
        ) from None


def _banner(config: Config, secret: str | None, config_path: str | None = None) -> str:
    base = f"http://{config.server.http_host}:{config.server.http_port}"
    if secret is None:
        key = "$MODELWAY_KEY"
        # The commands must read the configuration this gateway runs with.
        option = f" --config {shlex.quote(config_path)}" if config_path else ""
        intro = (
            "The store already has accounts. Make a key with\n"
            f"    .venv/bin/python -m modelway{option} keys create --account acct_... --name me\n"
            f"(modelway{option} accounts list shows the ids), then: export MODELWAY_KEY=<its secret>\n"
        )
    else:
        key = secret
        intro = f"Created an operator account and its first API key (shown once, keep it):\n\n    {secret}\n"
    return (
        f"{intro}\n"
        f"REST (OpenAI-compatible): {base}/api/v1\n"
        f"gRPC (native and via Envoy): {config.server.grpc_host}:{config.server.grpc_port} and {base[7:]}\n"
        f'Try:\n    curl -s {base}/api/v1/chat/completions -H "Authorization: Bearer {key}" '
        "-H 'Content-Type: application/json' "
        """-d '{"model":"echo-1","messages":[{"role":"user","content":"Hello!"}]}'\n\n"""
        "Ctrl-C drains and stops both (a second Ctrl-C stops at once)."
    )


async def _up(config: Config, root: Path, workdir: Path, config_path: str | None = None) -> int:
    """`make run`: checks everything, the server, Envoy in front, then a first account and key if the store is empty.

    Nothing is printed, and no key made, until the configuration, providers,
    workdir and every port have been checked and the gateway answers
    through Envoy: a key made is a key shown.
    """
    files = EdgeFiles.in_repo(root, workdir)
    render_envoy_config(config.server, files)  # the template, Lua and descriptor are there
    gateway = Gateway(config)  # every provider kind is known
    check_ports(config.server, ("http_port", "grpc_port", "ops_port"))
    check_workdir(files)  # no other gateway's Envoy uses it
    server = config.server
    envoy = Envoy.start(server, files, drain_seconds=server.shutdown_grace_seconds, base_id=server.http_port)
    gateway.edge = envoy

    async def edge_ready() -> None:
        await _edge_ready(config, envoy, files.log)

    async def announce() -> None:
        secret = await _bootstrap(config)
        if secret is not None:
            await gateway.directory.refresh()  # the new key works on the very first call
        print(_banner(config, secret, config_path), flush=True)

    try:
        await run(gateway, edge_ready, announce)
    finally:
        envoy.stop()
    return 0


async def up_workers(config: Config, root: Path, workdir: Path, config_file: str, config_path: str | None) -> int:
    """`modelway up --workers N`: N server processes behind one Envoy that lists them all.

    As `_up`: everything is checked first, and the first key is made only once
    every worker is ready and the gateway answers through Envoy.
    """
    files = EdgeFiles.in_repo(root, workdir)
    render_envoy_config(config.server, files)
    Gateway(config)  # every provider kind is known
    check_ports(config.server, ("http_port",))
    check_worker_ports(config)
    check_workdir(files)
    server = config.server
    envoy = Envoy.start(server, files, drain_seconds=server.shutdown_grace_seconds, base_id=server.http_port)

    async def edge_ready() -> None:
        await _edge_ready(config, envoy, files.log)

    async def announce() -> None:
        print(_banner(config, await _bootstrap(config), config_path), flush=True)

    try:
        return await run_workers(config, config_file, envoy, edge_ready, announce)
    finally:
        envoy.stop()


def _credits(micro: int) -> str:
    return f"{micro / MICRO:,.6f}".rstrip("0").rstrip(".")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelway", description=__doc__)
    config_help = "the TOML configuration (default: $MODELWAY_CONFIG or modelway.toml)"
    parser.add_argument("--config", default=os.environ.get("MODELWAY_CONFIG", "modelway.toml"), help=config_help)
    # --config is also accepted after any subcommand (`modelway serve --config x.toml`);
    # SUPPRESS keeps a subcommand from resetting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True)
    workers_help = "server processes (default: server.workers); more than 1 needs [shared] redis_url"
    serve_ = commands.add_parser("serve", parents=[common], help="run the gRPC server")
    serve_.add_argument("--workers", type=int, help=workers_help)
    up = commands.add_parser("up", parents=[common], help="first account and key if none, then Envoy and the server")
    up.add_argument("--workers", type=int, help=workers_help)
    up.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (envoy/ and build/)")
    up.add_argument("--workdir", type=Path, help="Envoy's config, admin socket and logs (default: ROOT/build)")
    envoy_config = commands.add_parser("envoy-config", parents=[common], help="print the rendered Envoy configuration")
    envoy_config.add_argument("--root", type=Path, default=Path.cwd())
    envoy_config.add_argument("--workers", type=int, help="endpoints: one per server process (default: server.workers)")
    envoy_config.add_argument("--http-port", type=int, help="the listener's port (a second Envoy beside the first)")

    accounts = commands.add_parser("accounts", parents=[common], help="accounts and credits").add_subparsers(
        dest="action", required=True
    )
    create_account_ = accounts.add_parser("create", parents=[common], help="create an account; prints its id")
    create_account_.add_argument("--name", required=True)
    create_account_.add_argument("--plan", help="a plan from the configuration (default: limits.default_plan)")
    create_account_.add_argument("--credits", type=float, default=0.0)
    accounts.add_parser("list", parents=[common], help="accounts with their plan and balance")
    credit = accounts.add_parser("add-credits", parents=[common], help="add (or, negative, remove) credits")
    credit.add_argument("id")
    credit.add_argument("credits", type=float)

    keys = commands.add_parser("keys", parents=[common], help="API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", parents=[common], help="create a key and print its secret once")
    create.add_argument("--account", required=True, help="the owning account id (acct_...)")
    create.add_argument("--name", required=True)
    create.add_argument("--permissions", type=_csv, default=DEFAULT_PERMISSIONS, help="comma-separated")
    create.add_argument("--expires-in-days", type=float)
    create.add_argument("--rate-limit", type=int, help="requests per minute instead of the plan's")
    create.add_argument("--daily-token-budget", type=int, help="tokens per UTC day instead of the plan's")
    create.add_argument("--models", type=_csv, default=(), help="comma-separated allow-list")
    keys.add_parser("list", parents=[common], help="list keys (never their secrets)")
    delete = keys.add_parser("delete", parents=[common], help="delete a key")
    delete.add_argument("id")
    return parser


def _with_workers(config: Config, args: argparse.Namespace) -> Config:
    """The configuration with --workers / --http-port applied; CliError when it cannot run them."""
    server = config.server
    try:
        if getattr(args, "workers", None) is not None:
            server = replace(server, workers=args.workers)
        if getattr(args, "http_port", None) is not None:
            server = replace(server, http_port=args.http_port)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return replace(config, server=server)


def _run(args: argparse.Namespace, config: Config) -> int:
    command = args.command if args.command in ("serve", "up", "envoy-config") else f"{args.command} {args.action}"
    if command in ("serve", "up"):
        config = _with_workers(config, args)
        refusal = needs_shared_state(config)
        if refusal is not None:
            raise CliError(refusal)
    if command == "serve":
        if config.server.workers > 1:
            return run_serving(serve_workers(config, args.config))
        run_serving(serve(config))
    elif command == "up":
        # Named in the banner's commands unless it is the default they would read anyway.
        config_path = None if args.config == "modelway.toml" else args.config
        workdir = args.workdir or args.root / "build"
        if config.server.workers > 1:
            return run_serving(up_workers(config, args.root, workdir, args.config, config_path))
        return run_serving(_up(config, args.root, workdir, config_path))
    elif command == "envoy-config":
        print(render_envoy_config(_with_workers(config, args).server, EdgeFiles.in_repo(args.root)))
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
    try:
        config = load_config(args.config)
        configure_logging(config)
        return _run(args, config)
    except (ConfigError, CliError, StartupError, EdgeError, StoreUnavailable) as exc:
        print(f"modelway: {exc}", file=sys.stderr)
        return 2
