-- The keepers' own records. Every name here is unqualified on purpose: the connection's
-- search_path points at the keepers' schema (DB_SCHEMA, default `keepers`), so these tables never
-- meet the protocol's `public.pricing_oracle_updates` (hedge prices, another shape).

-- One row per oracle price update the pricing keeper sent (or would have sent, with --dry-run).
CREATE TABLE pricing_oracle_updates (
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
CREATE INDEX pricing_oracle_updates_asset_latest
    ON pricing_oracle_updates (asset, created_at DESC, id DESC);

-- One row per bridge per bridge-health cycle.
CREATE TABLE bridge_health_snapshots (
    id           BIGSERIAL PRIMARY KEY,
    bridge_id    INTEGER NOT NULL,
    bridge       TEXT NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('healthy', 'degraded', 'offline', 'unknown')),
    is_online    BOOLEAN NOT NULL,
    last_seen    TIMESTAMPTZ,
    signals      JSONB NOT NULL DEFAULT '[]',
    published    BOOLEAN NOT NULL DEFAULT false,
    message_hash TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX bridge_health_snapshots_bridge_latest
    ON bridge_health_snapshots (bridge_id, created_at DESC, id DESC);

-- One row per db-backup run, inserted as 'running' and finished as 'success' or 'failed'.
CREATE TABLE backup_runs (
    id          BIGSERIAL PRIMARY KEY,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    status      TEXT NOT NULL CHECK (status IN ('running', 'success', 'failed')),
    database    TEXT NOT NULL,
    location    TEXT,
    remote_key  TEXT,
    size_bytes  BIGINT,
    sha256      TEXT,
    manifest    JSONB,
    verify_mode TEXT,
    verified    BOOLEAN,
    error       TEXT
);

-- "Latest successful backup" (retention, staleness) and "latest runs" (listing).
CREATE INDEX backup_runs_status_latest ON backup_runs (status, finished_at DESC);
CREATE INDEX backup_runs_started ON backup_runs (started_at DESC);
