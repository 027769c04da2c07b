"""Command line: serve, the all-in-one dev runner, key administration, Envoy config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from modelway.app import serve
from modelway.config import Config, ConfigError, load_config
from modelway.core.keys import IssuedKey, issue_key
from modelway.edge import EdgeFiles, render_envoy_config, start_envoy
from modelway.store import KeyRecord, SqliteStore

__all__ = ["main"]


async def _create_key(config: Config, name: str, expires_in_days: float | None) -> IssuedKey:
    now = int(time.time())
    expires_at = None if expires_in_days is None else now + int(expires_in_days * 86400)
    issued = issue_key(name, prefix=config.keys.prefix, now=now, expires_at=expires_at)
    async with SqliteStore(config.store.path) as store:
        await store.insert_key(issued.record)
    return issued


async def _list_keys(config: Config) -> list[KeyRecord]:
    async with SqliteStore(config.store.path) as store:
        return await store.list_keys()


async def _delete_key(config: Config, key_id: str) -> bool:
    async with SqliteStore(config.store.path) as store:
        return await store.delete_key(key_id)


def _up(config: Config, root: Path) -> int:
    """`make run`: first key if none, Envoy in front, the server in this process."""
    build = root / "build"
    build.mkdir(exist_ok=True)
    envoy_yaml = build / "envoy.yaml"
    envoy_yaml.write_text(render_envoy_config(config.server, EdgeFiles.in_repo(root)))
    base = f"http://{config.server.http_host}:{config.server.http_port}"
    if asyncio.run(_list_keys(config)):
        secret = "<your key>"
        print("The store already has API keys; make another with: .venv/bin/python -m modelway keys create --name NAME")
    else:
        secret = asyncio.run(_create_key(config, "first key", None)).secret
        print(f"Created the first API key (shown once, keep it):\n\n    {secret}\n")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="modelway", description=__doc__)
    parser.add_argument("--config", default=os.environ.get("MODELWAY_CONFIG", "modelway.toml"))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the gRPC server")
    up = commands.add_parser("up", help="create a first key if none, start Envoy and the server")
    up.add_argument("--root", type=Path, default=Path.cwd(), help="repository root (envoy/ and build/)")
    envoy_config = commands.add_parser("envoy-config", help="print the rendered Envoy configuration")
    envoy_config.add_argument("--root", type=Path, default=Path.cwd())
    keys = commands.add_parser("keys", help="API key administration").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--expires-in-days", type=float)
    keys.add_parser("list", help="list keys (never their secrets)")
    delete = keys.add_parser("delete", help="delete a key")
    delete.add_argument("id")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"modelway: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        asyncio.run(serve(config))
        return 0
    if args.command == "up":
        return _up(config, args.root)
    if args.command == "envoy-config":
        print(render_envoy_config(config.server, EdgeFiles.in_repo(args.root)))
        return 0
    if args.action == "create":
        issued = asyncio.run(_create_key(config, args.name, args.expires_in_days))
        print(f"id:     {issued.record.id}\nsecret: {issued.secret}\n(the secret is shown only now)")
        return 0
    if args.action == "list":
        for key in asyncio.run(_list_keys(config)):
            state = "enabled" if key.is_enabled else "disabled"
            print(
                f"{key.id}\t{key.name}\t...{key.hint}\t{state}\tcreated {key.created_at}\tlast used {key.last_used_at}"
            )
        return 0
    if asyncio.run(_delete_key(config, args.id)):
        print(f"deleted {args.id}")
        return 0
    print(f"modelway: no key {args.id}", file=sys.stderr)
    return 1
