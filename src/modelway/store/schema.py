"""PostgreSQL schema as an ordered list of migrations; a database records the versions it has."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "MIGRATION_LOCK"]

# pg_advisory_lock key held while migrating ("modelway" in ASCII, as a bigint), so that processes
# starting together migrate one at a time.
MIGRATION_LOCK = int.from_bytes(b"modelway", "big") & 0x7FFF_FFFF_FFFF_FFFF

# Version 1: what SQLite holds, with PostgreSQL types. `data_revision` is one row that triggers
# move on every change to accounts or keys other processes must see (a last-used time is not
# one): its new value becomes visible with the change itself, at commit, which a sequence's
# would not (nextval shows before the commit does).
_V1 = (
    """CREATE TABLE accounts (
        id text PRIMARY KEY,
        name text NOT NULL,
        plan text NOT NULL,
        credits bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
        created_at bigint NOT NULL
    )""",
    """CREATE TABLE api_keys (
        id text PRIMARY KEY,
        account_id text NOT NULL REFERENCES accounts (id),
        name text NOT NULL,
        secret_hash text NOT NULL UNIQUE,
        hint text NOT NULL,
        created_at bigint NOT NULL,
        permissions text[] NOT NULL DEFAULT '{}',
        expires_at bigint,
        is_enabled boolean NOT NULL DEFAULT true,
        last_used_at bigint,
        rate_limit integer,
        daily_token_budget bigint,
        allowed_models text[] NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX api_keys_account ON api_keys (account_id)",
    """CREATE TABLE usage (
        id bigserial PRIMARY KEY,
        request_id text NOT NULL UNIQUE,
        account_id text NOT NULL,
        key_id text NOT NULL,
        surface text NOT NULL,
        model text NOT NULL,
        provider text NOT NULL,
        prompt_tokens bigint NOT NULL,
        completion_tokens bigint NOT NULL,
        cost bigint NOT NULL,
        latency_ms bigint NOT NULL,
        status integer NOT NULL,
        error_code text NOT NULL,
        created_at double precision NOT NULL,
        client_request_id text NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX usage_account_created ON usage (account_id, created_at)",
    "CREATE INDEX usage_key_created ON usage (key_id, created_at)",
    """CREATE TABLE conversations (
        id bigserial PRIMARY KEY,
        account_id text NOT NULL REFERENCES accounts (id),
        title text NOT NULL,
        model text NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    )""",
    "CREATE INDEX conversations_account_updated ON conversations (account_id, updated_at)",
    """CREATE TABLE conversation_messages (
        id bigserial PRIMARY KEY,
        conversation_id bigint NOT NULL REFERENCES conversations (id),
        role text NOT NULL,
        content text NOT NULL,
        model text NOT NULL,
        tokens bigint NOT NULL,
        created_at double precision NOT NULL
    )""",
    "CREATE INDEX conversation_messages_conversation ON conversation_messages (conversation_id, id)",
    """CREATE TABLE data_revision (
        single boolean PRIMARY KEY DEFAULT true CHECK (single),
        value bigint NOT NULL
    )""",
    "INSERT INTO data_revision (single, value) VALUES (true, 0)",
    """CREATE FUNCTION bump_data_revision() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE data_revision SET value = value + 1;
        RETURN NULL;
    END
    $$""",
    """CREATE TRIGGER accounts_changed
        AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, name, plan, credits ON accounts
        FOR EACH STATEMENT EXECUTE FUNCTION bump_data_revision()""",
    """CREATE TRIGGER api_keys_changed
        AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, account_id, name, secret_hash, hint, permissions,
            expires_at, is_enabled, rate_limit, daily_token_budget, allowed_models ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION bump_data_revision()""",
)

# v2: usage batches (which change credits) no longer bump the revision: every worker reloaded all
# keys after each batch, and every usage transaction waited on the one data_revision row. The
# operator's credit changes bump it themselves (PostgresStore.add_credits).
_V2 = (
    "DROP TRIGGER accounts_changed ON accounts",
    """CREATE TRIGGER accounts_changed
        AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF id, name, plan ON accounts
        FOR EACH STATEMENT EXECUTE FUNCTION bump_data_revision()""",
)

# (version, statements), in order. Append; never edit a published one.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _V1), (2, _V2))
