"""Readiness: whether this process should be sent new calls (the load balancer's question, not liveness)."""

from __future__ import annotations

import enum

__all__ = ["Readiness", "State"]


class State(enum.StrEnum):
    STARTING = "starting"  # the store is opening or the configuration is loading
    READY = "ready"
    DRAINING = "draining"  # shutting down: calls in flight finish, no new ones please


class Readiness:
    """Starting -> ready -> draining, one way only: a draining process never becomes ready again.

    /readyz and the gRPC health service both follow it, so Envoy (or any
    balancer) stops sending calls the moment a drain begins, while calls
    already running finish.
    """

    def __init__(self) -> None:
        self._state = State.STARTING

    @property
    def state(self) -> State:
        return self._state

    @property
    def is_ready(self) -> bool:
        return self._state is State.READY

    def ready(self) -> None:
        """The store is open and the configuration loaded: calls may come."""
        if self._state is State.STARTING:
            self._state = State.READY

    def drain(self) -> None:
        self._state = State.DRAINING
