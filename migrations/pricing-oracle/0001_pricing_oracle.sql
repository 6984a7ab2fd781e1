-- The pricing keeper's own records, with their own bookkeeping (_pricing_oracle_migrations).
-- IF NOT EXISTS: a schema migrated by the releases that kept one history for every binary
-- (released/0001 and 0012) already has these tables, unchanged; they are adopted as they are.
-- Names are unqualified on purpose: the connection's search_path is the keepers' schema
-- (DB_SCHEMA, default `keepers`), so they never meet the protocol's public tables.

-- One row per oracle price update the pricing keeper sent (or would have sent, with --dry-run).
CREATE TABLE IF NOT EXISTS pricing_oracle_updates (
    id           BIGSERIAL PRIMARY KEY,
    asset        TEXT NOT NULL,
    asset_id     INTEGER NOT NULL,
    price_micro  BIGINT NOT NULL,
    quotes       JSONB NOT NULL DEFAULT '[]',
    reason       TEXT NOT NULL CHECK (reason IN ('deviation', 'heartbeat', 'forced', 'initial')),
    wallet       TEXT NOT NULL,
    seqno        BIGINT,
    message_hash TEXT,
    status       TEXT NOT NULL CHECK (status IN ('sent', 'confirmed', 'failed', 'dry_run')),
    error        TEXT,
    observed_at  TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    confirmed_at TIMESTAMPTZ
);

-- "Latest update per asset": an index scan per asset, newest first; id breaks ties within a
-- transaction (now() is the transaction start).
CREATE INDEX IF NOT EXISTS pricing_oracle_updates_asset_latest
    ON pricing_oracle_updates (asset, created_at DESC, id DESC);

-- One row per asset per pricing tick: why each price was, or was not, published.
CREATE TABLE IF NOT EXISTS pricing_oracle_decisions (
    id            BIGSERIAL PRIMARY KEY,
    tick_at       TIMESTAMPTZ NOT NULL,
    asset         TEXT NOT NULL,
    action        TEXT NOT NULL CHECK (action IN ('publish', 'hold', 'skip', 'no_quorum')),
    reason        TEXT NOT NULL,
    price_micro   BIGINT,
    onchain_micro BIGINT,
    observed_at   TIMESTAMPTZ,
    quotes        JSONB NOT NULL DEFAULT '[]',
    detail        JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- "Decisions of one asset since T", newest last.
CREATE INDEX IF NOT EXISTS pricing_oracle_decisions_asset_tick
    ON pricing_oracle_decisions (asset, tick_at, id);
