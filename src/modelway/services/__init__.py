"""Thin gRPC servicers, one per proto service; the core does the work."""
