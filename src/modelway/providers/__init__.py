"""Upstream providers: one adapter per wire format, dispatched by kind in registry.py."""
