"""The gateway core: canonical types, auth, catalog, chat orchestration, accounting."""
