"""Generated images kept as files and served back by unguessable names, and the absolute URLs that name them.

Each PNG gets a random name of 192 bits (`<32 URL-safe characters>.png`):
knowing a URL is what grants access to its image, as with OpenAI's own image
URLs, so the file route needs no key. Files live in one directory beside the
store (`<store dir>/images/`), shared by every server process using that
store, readable by the server's user only (directory 0700, files 0600);
they are kept until the operator removes them. File I/O runs in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

from modelway.config import ServerConfig

__all__ = ["FILES_PATH", "ImageFiles", "public_base_url"]

# Where GET serves the files, below the gateway's base URL.
FILES_PATH = "/api/v1/images/files/"
_NAME = re.compile(r"[A-Za-z0-9_-]{32}\.png")
# A Host header as a URL may carry it: a DNS name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class ImageFiles:
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _save(self, pngs: list[bytes]) -> list[str]:
        # Only the server's user may list or read them: a listing would hand out every image's URL.
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        names = []
        for png in pngs:
            name = secrets.token_urlsafe(24) + ".png"
            temporary = self._directory / f".{name}.tmp"
            with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
                file.write(png)
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

    def _read(self, name: str) -> bytes | None:
        try:
            return (self._directory / name).read_bytes()
        except FileNotFoundError:
            return None

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
    Envoy listener's address.
    """
    if server.public_url:
        return server.public_url
    host = metadata.get("x-forwarded-host", "").split(",")[0].strip()
    scheme = metadata.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if host and _HOST.fullmatch(host):
        return f"{scheme if scheme in ('http', 'https') else 'http'}://{host}"
    listen = f"[{server.http_host}]" if ":" in server.http_host else server.http_host
    return f"http://{listen}:{server.http_port}"
