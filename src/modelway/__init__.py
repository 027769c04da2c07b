"""modelway: an LLM API gateway (grpc.aio core, Envoy REST/SSE front)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
