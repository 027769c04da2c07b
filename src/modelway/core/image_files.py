"""Generated images kept as files and served back by unguessable names, and the absolute URLs that name them.

Each PNG gets a random name of 192 bits (`<32 URL-safe characters>.png`):
knowing a URL is what grants access to its image, as with OpenAI's own image
URLs, so the file route needs no key. Files live in one directory beside the
store (`<store dir>/images/`), shared by every server process using that
store, readable by the server's user only (directory 0700, files 0600).

A file is kept for `[store] image_retention_hours` (24 by default; OpenAI's
own URLs last an hour): past that its URL answers 404 at once, and a sweep
every few minutes deletes it (any process may sweep: deleting a file twice
is harmless). File I/O runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from modelway.config import ServerConfig
from modelway.core.clock import Clock, SystemClock

__all__ = ["FILES_PATH", "ImageFiles", "public_base_url"]

# Where GET serves the files, below the gateway's base URL.
FILES_PATH = "/api/v1/images/files/"
_NAME = re.compile(r"[A-Za-z0-9_-]{32}\.png")
# A Host header as a URL may carry it: a DNS name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# How often expired files are deleted: a tenth of the retention, between 1 s and 10 minutes.
_SWEEP_MIN_SECONDS = 1.0
_SWEEP_MAX_SECONDS = 600.0

log = logging.getLogger(__name__)


class ImageFiles:
    def __init__(self, directory: Path, retention_seconds: float, clock: Clock | None = None) -> None:
        self._directory = directory
        self._retention = retention_seconds
        self._clock = clock or SystemClock()
        self._sweeper: asyncio.Task[None] | None = None

    def _save(self, pngs: list[bytes]) -> list[str]:
        # Only the server's user may list or read them: a listing would hand out every image's URL.
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        names = []
        # Stamped with the clock's time, not left at the file system's: expiry compares it with the clock's now().
        now = self._clock.now()
        for png in pngs:
            name = secrets.token_urlsafe(24) + ".png"
            temporary = self._directory / f".{name}.tmp"
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
                file.write(png)
            os.utime(temporary, (now, now))  # once written: a write sets the time again
            # A reader never sees half a file: the name appears only once the bytes are all there.
            os.replace(temporary, self._directory / name)
            names.append(name)
        return names

    async def save(self, pngs: list[bytes]) -> list[str]:
        """Stores the images; their names, in order."""
        return await asyncio.to_thread(self._save, pngs)

    async def save_base64(self, images: list[str]) -> list[str]:
        """Stores base64-encoded images (as a provider sends them); their names, in order."""

        def decode_and_save() -> list[str]:
            try:
                pngs = [base64.b64decode(image, validate=True) for image in images]
            except binascii.Error:
                raise ValueError("an image is not valid base64") from None
            return self._save(pngs)

        return await asyncio.to_thread(decode_and_save)

    def _expired(self, stat: os.stat_result) -> bool:
        return stat.st_mtime < self._clock.now() - self._retention

    def _read(self, name: str) -> bytes | None:
        try:
            with open(self._directory / name, "rb") as file:
                # Expired but not swept yet: gone all the same.
                return None if self._expired(os.fstat(file.fileno())) else file.read()
        except FileNotFoundError:
            return None

    def sweep(self) -> int:
        """Deletes the files (and any temporary file a crash left) older than the retention; how many.
        Blocking: run it in a thread."""
        removed, kept = 0, 0
        try:
            entries = list(os.scandir(self._directory))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and self._expired(entry.stat(follow_symlinks=False)):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass  # another process swept it first
            except OSError:
                kept += 1  # one file we may not delete does not keep the others
        if kept:
            # Not the names: each is what grants access to its image.
            log.warning("%d expired image files could not be deleted", kept)
        return removed

    async def _sweep_forever(self) -> None:
        interval = min(max(self._retention / 10, _SWEEP_MIN_SECONDS), _SWEEP_MAX_SECONDS)
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep)
            except Exception:
                # Whatever it was, the next sweep tries again: a dead sweeper would keep every file for good.
                log.exception("sweeping expired image files failed")
            else:
                if removed:
                    log.info("deleted %d expired image files", removed)
            await asyncio.sleep(interval)

    def start_sweeping(self) -> None:
        """Deletes expired files from now on, in the background, until `stop_sweeping`."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="image-sweeper")

    async def stop_sweeping(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def read(self, name: str) -> bytes | None:
        """The image called `name`; None when there is none (or the name is not one we give out)."""
        if not _NAME.fullmatch(name):
            return None  # nothing else is ever looked up: no path can leave the directory
        return await asyncio.to_thread(self._read, name)


def public_base_url(server: ServerConfig, metadata: Mapping[str, str]) -> str:
    """The gateway's base URL as this caller reaches it, for links it hands out.

    `server.public_url` when the operator set one; else the request's own
    host and scheme as Envoy passes them on (X-Forwarded-Host, which Envoy
    fills from the Host header when no proxy in front set it, and
    X-Forwarded-Proto); else (a native gRPC call straight to the server) the
    Envoy listener's address, 127.0.0.1 when it listens on every address
    (0.0.0.0 is no address a client can fetch from). grpcio does not show a
    servicer the call's :authority, so a direct native call cannot name
    the host it used: set `server.public_url` for links other machines follow.
    """
    if server.public_url:
        return server.public_url
    host = metadata.get("x-forwarded-host", "").split(",")[0].strip()
    scheme = metadata.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if host and _HOST.fullmatch(host):
        return f"{scheme if scheme in ('http', 'https') else 'http'}://{host}"
    host = server.http_host
    if ipaddress.ip_address(host).is_unspecified:
        host = "127.0.0.1" if ipaddress.ip_address(host).version == 4 else "::1"
    listen = f"[{host}]" if ":" in host else host
    return f"http://{listen}:{server.http_port}"
