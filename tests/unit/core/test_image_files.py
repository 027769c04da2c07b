"""Stored images by unguessable name, and the base URL links are built on."""

from __future__ import annotations

import asyncio
import base64
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from modelway.config import ConfigError, ServerConfig
from modelway.core.image_files import ImageFiles, public_base_url
from tests.conftest import OffsetClock


async def test_saved_images_read_back_by_name(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path / "images", 3600)
    names = await files.save([b"png-1", b"png-2"])
    assert len(set(names)) == 2
    assert all(len(name) == 36 and name.endswith(".png") for name in names)
    assert [await files.read(name) for name in names] == [b"png-1", b"png-2"]
    [name] = await files.save_base64([base64.b64encode(b"png-3").decode()])
    assert await files.read(name) == b"png-3"
    assert not list((tmp_path / "images").glob(".*.tmp"))


async def test_only_the_server_user_can_list_or_read_the_files(tmp_path: Path) -> None:
    # Whatever the umask lets through, a listing would hand out every URL: the directory is 0700, files 0600.
    previous = os.umask(0o022)
    try:
        files = ImageFiles(tmp_path / "images", 3600)
        names = await files.save([b"png-1"])
        names += await files.save_base64([base64.b64encode(b"png-2").decode()])
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "images").stat().st_mode) == 0o700
    assert [stat.S_IMODE((tmp_path / "images" / name).stat().st_mode) for name in names] == [0o600, 0o600]


async def test_only_names_we_give_out_are_looked_up(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"outside")
    files = ImageFiles(tmp_path / "images", 3600)
    for name in ("../secret.png", "A" * 32 + ".png", "", "x.png", "A" * 32 + ".png/..", "A" * 31 + "/.png"):
        assert await files.read(name) is None


async def test_bad_base64_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        await ImageFiles(tmp_path, 3600).save_base64(["not base64!"])


def test_base_url_from_config_then_forwarded_host_then_listener() -> None:
    server = ServerConfig(http_port=8080)
    assert public_base_url(ServerConfig(public_url="https://ai.example.com/"), {"x-forwarded-host": "h"}) == (
        "https://ai.example.com"
    )
    assert public_base_url(server, {"x-forwarded-host": "gw:8443", "x-forwarded-proto": "https"}) == "https://gw:8443"
    assert public_base_url(server, {"x-forwarded-host": "a.example, b.example"}) == "http://a.example"
    assert public_base_url(server, {"x-forwarded-host": "[::1]:9"}) == "http://[::1]:9"
    # Anything that is not a host is not put in a link.
    assert public_base_url(server, {"x-forwarded-host": "evil.example/path?x"}) == "http://127.0.0.1:8080"
    assert public_base_url(server, {"x-forwarded-host": "h", "x-forwarded-proto": "javascript"}) == "http://h"
    assert public_base_url(ServerConfig(http_host="::1"), {}) == "http://[::1]:8080"


def test_public_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="public_url"):
        ServerConfig(public_url="ftp://x")


@pytest.mark.parametrize(
    ("host", "expected"),
    [("0.0.0.0", "http://127.0.0.1:8080"), ("::", "http://[::1]:8080"), ("10.1.2.3", "http://10.1.2.3:8080")],
)
def test_a_direct_native_call_never_gets_a_wildcard_address(host: str, expected: str) -> None:
    server = ServerConfig(http_host=host, http_port=8080)
    assert public_base_url(server, {}) == expected
    assert public_base_url(server, {"x-forwarded-host": "ai.example.com"}) == "http://ai.example.com"


async def test_sweep_deletes_only_expired_files(tmp_path: Path) -> None:
    clock = OffsetClock()
    files = ImageFiles(tmp_path / "images", retention_seconds=60, clock=clock)
    old, new = await files.save([b"old", b"new"])
    aged = time.time() - 120
    os.utime(tmp_path / "images" / old, (aged, aged))
    assert await files.read(old) is None  # expired before any sweep
    assert await files.read(new) == b"new"
    assert files.sweep() == 1
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [new]
    clock.set(time.time() + 61)
    assert files.sweep() == 1 and not list((tmp_path / "images").iterdir())


async def test_files_are_stamped_with_the_clocks_time(tmp_path: Path) -> None:
    """Expiry compares a file's time with the injected clock's now(): the file carries the clock's time too,
    so a clock ahead of the file system's does not expire a file the moment it is saved."""
    clock = OffsetClock()
    clock.set(time.time() + 1000)
    files = ImageFiles(tmp_path / "images", retention_seconds=60, clock=clock)
    [name] = await files.save([b"fresh"])
    [encoded] = await files.save_base64([base64.b64encode(b"fresh too").decode()])
    assert await files.read(name) == b"fresh" and await files.read(encoded) == b"fresh too"
    assert files.sweep() == 0
    clock.set(time.time() + 1061)
    assert await files.read(name) is None and files.sweep() == 2


async def test_a_file_that_cannot_be_deleted_does_not_stop_the_others(tmp_path: Path) -> None:
    clock = OffsetClock()
    files = ImageFiles(tmp_path / "images", retention_seconds=60, clock=clock)
    names = await files.save([b"png"] * 8)
    stuck = tmp_path / "images" / names[3]
    # Immutable: not even root may delete it (EPERM), as a file of another user would be for us.
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root on ext4/xfs/btrfs")
    try:
        clock.set(time.time() + 61)
        assert files.sweep() == 7
        assert [p.name for p in (tmp_path / "images").iterdir()] == [stuck.name]
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)


class FailingOnceClock(OffsetClock):
    """Raises from now() once, when told to: a failure of a kind the sweep does not expect."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def now(self) -> float:
        if self.fail:
            self.fail = False
            raise RuntimeError("clock failed")
        return super().now()


async def test_the_sweeper_outlives_an_unexpected_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FailingOnceClock()
    files = ImageFiles(tmp_path / "images", retention_seconds=1, clock=clock)
    await files.save([b"a", b"b"])
    clock.set(time.time() + 2)
    clock.fail = True
    files.start_sweeping()
    try:
        deadline = time.monotonic() + 5
        while list((tmp_path / "images").iterdir()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not list((tmp_path / "images").iterdir())  # the sweep after the failed one deleted them
    finally:
        await files.stop_sweeping()  # does not re-raise the failure
    assert "sweeping expired image files failed" in caplog.text
