-- db-backup's run records, with their own bookkeeping (_db_backup_migrations), applied only to
-- BACKUP_RECORDS_URL. IF NOT EXISTS: a schema migrated by the releases that kept one history
-- for every binary (released/0001) already has the table, unchanged; it is adopted as it is.

-- One row per db-backup run, inserted as 'running' and finished as 'success' or 'failed'.
CREATE TABLE IF NOT EXISTS backup_runs (
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
CREATE INDEX IF NOT EXISTS backup_runs_status_latest ON backup_runs (status, finished_at DESC);
CREATE INDEX IF NOT EXISTS backup_runs_started ON backup_runs (started_at DESC);
