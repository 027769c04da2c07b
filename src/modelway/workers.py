"""Several server processes (`--workers N`): started, watched, restarted when one crashes, drained together.

Worker i is `modelway serve` with its own ports: grpc_port + i and
ops_port + i (the one Envoy lists them all as endpoints). Each keeps the
drain order of app.py when it gets SIGTERM. Limits, budgets and credits are
exact across them only through Redis ([shared] redis_url), so more than one
worker without it is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from modelway.config import Config
from modelway.ops.http import NotReady, wait_until_ready

__all__ = ["SUPERVISOR_PID", "WorkerPool", "needs_shared_state", "outlive_no_supervisor", "worker_config"]

log = logging.getLogger(__name__)

# A worker that crashes is started again after this long (not in a tight loop if it keeps crashing).
_RESTART_SECONDS = 1.0
# Names the supervisor to each worker, which drains and exits if that process is gone.
SUPERVISOR_PID = "MODELWAY_SUPERVISOR_PID"


def needs_shared_state(config: Config) -> str | None:
    """Why `config` cannot run its workers (None when it can): one line for the operator."""
    workers = config.server.workers
    if workers > 1 and not config.shared.redis_url:
        return (
            f"--workers {workers} needs [shared] redis_url (or MODELWAY_REDIS_URL): with per-process state "
            "each worker would admit the full rate limit and spend credits the others reserved"
        )
    return None


def worker_config(config: Config, index: int) -> Config:
    """Worker `index`'s configuration: its own ports, one process."""
    server = config.server
    return replace(
        config,
        server=replace(server, grpc_port=server.grpc_port + index, ops_port=server.ops_port + index, workers=1),
    )


async def outlive_no_supervisor(supervisor: int, every: float = 1.0) -> None:
    """Drains this worker (as SIGTERM would) once its supervisor has died.

    Workers run in their own session, so a supervisor killed with SIGKILL
    takes none of them along: without this they would serve on, and hold
    their ports, with nobody to stop or restart them.
    """
    while os.getppid() == supervisor:
        await asyncio.sleep(every)
    log.warning("the supervising process %d is gone: draining and stopping this worker", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    restarts: int = 0


@dataclass
class WorkerPool:
    """N `modelway serve` processes; `stop` drains them all (SIGTERM) and waits for each."""

    config: Config
    config_path: str
    log_path: Path | None = None
    _workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        mine = worker_config(self.config, index).server
        env = {
            **os.environ,
            "MODELWAY_GRPC_PORT": str(mine.grpc_port),
            "MODELWAY_OPS_PORT": str(mine.ops_port),
            "MODELWAY_WORKERS": "1",
            SUPERVISOR_PID: str(os.getpid()),
        }
        output = open(self.log_path, "ab") if self.log_path is not None else None  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "modelway", "--config", self.config_path, "serve"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                # Its own process group: a terminal's Ctrl-C reaches the pool, which drains the workers in order.
                start_new_session=True,
            )
        finally:
            if output is not None:
                output.close()

    def start(self) -> None:
        for index in range(self.config.server.workers):
            self._workers.append(_Worker(index, self._spawn(index)))
        log.info(
            "started %d server processes (gRPC ports %d..%d)",
            len(self._workers),
            self.config.server.grpc_port,
            self.config.server.grpc_port + len(self._workers) - 1,
        )

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    async def ready(self, timeout: float = 60.0) -> None:
        """Waits until every worker's /readyz answers 200; raises RuntimeError naming one that exited."""
        deadline = asyncio.get_running_loop().time() + timeout
        for worker in self._workers:

            def ended(worker: _Worker = worker) -> str | None:
                code = worker.process.poll()
                return None if code is None else f"worker {worker.index} exited with status {code}"

            left = max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                await wait_until_ready(
                    f"http://127.0.0.1:{self.config.server.ops_port + worker.index}/readyz", left, ended
                )
            except NotReady as exc:
                raise RuntimeError(str(exc)) from None
            except TimeoutError:
                raise RuntimeError(f"worker {worker.index} was not ready within {timeout:.0f}s") from None

    async def watch(self) -> None:
        """Reports a worker that exits on its own, and starts it again; runs until cancelled."""
        while not self._stopping:
            for worker in self._workers:
                code = worker.process.poll()
                if code is None or self._stopping:
                    continue
                log.error(
                    "worker %d (pid %d) exited with status %s; starting it again",
                    worker.index,
                    worker.process.pid,
                    code,
                )
                await asyncio.sleep(_RESTART_SECONDS)
                if not self._stopping:
                    worker.process = self._spawn(worker.index)
                    worker.restarts += 1
            await asyncio.sleep(0.2)

    async def stop(self, grace: float) -> int:
        """SIGTERM to every worker (each drains), then waits; the first non-zero status, or 0."""
        self._stopping = True
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        status = 0
        for worker in self._workers:
            try:
                code = await asyncio.to_thread(worker.process.wait, grace + 10)
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %.0fs; killing it", worker.index, grace + 10)
                worker.process.kill()
                code = await asyncio.to_thread(worker.process.wait)
            # Killed by the SIGTERM itself: a worker still starting (no handler yet, no calls either).
            if code not in (0, -signal.SIGTERM) and not status:
                status = code
        return status
