-- The chain keepers' in-flight journal (keeper-ton), with its own bookkeeping
-- (_ton_migrations): both chain keepers apply it. IF NOT EXISTS: a schema migrated by the
-- releases that kept one history for every binary (released/0013) already has it.
-- At most one signed external message per wallet that may still land. Written before the
-- first send, deleted once the message is confirmed or provably expired; on start, on lease
-- takeover and before every signature the keeper resumes what it finds here (re-sends the same
-- BoC) instead of signing a new body for that seqno.
CREATE TABLE IF NOT EXISTS ton_inflight (
    wallet     TEXT PRIMARY KEY,
    seqno      BIGINT NOT NULL,
    entry      JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
