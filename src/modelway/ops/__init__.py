"""Operations: Prometheus metrics, health and readiness, structured logs, and the loopback HTTP port serving them."""

from modelway.ops.health import Readiness
from modelway.ops.http import OpsServer
from modelway.ops.logs import configure_logging
from modelway.ops.metrics import Telemetry

__all__ = ["OpsServer", "Readiness", "Telemetry", "configure_logging"]
