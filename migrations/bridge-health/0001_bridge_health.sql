-- The bridge keeper's own records, with their own bookkeeping (_bridge_health_migrations).
-- IF NOT EXISTS: a schema migrated by the releases that kept one history for every binary
-- (released/0001 and 0012) already has these tables, unchanged; they are adopted as they are.

-- One row per bridge per bridge-health cycle.
CREATE TABLE IF NOT EXISTS bridge_health_snapshots (
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

CREATE INDEX IF NOT EXISTS bridge_health_snapshots_bridge_latest
    ON bridge_health_snapshots (bridge_id, created_at DESC, id DESC);

-- One row per bridge: consecutive critical ticks per signal, the last status, recovery count
-- (confirmed verdicts across restarts and --once runs).
CREATE TABLE IF NOT EXISTS bridge_health_verdicts (
    bridge_id  INTEGER PRIMARY KEY,
    history    JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
