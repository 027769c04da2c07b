"""Real servers (PostgreSQL, Redis) that tests start for themselves."""
