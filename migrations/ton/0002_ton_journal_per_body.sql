-- One journal entry per signed body rather than per wallet: a keeper that regains the wallet
-- must see a successor's message for a later seqno instead of overwriting it, and a message is
-- cleared by its own body hash, never by another body that happens to share its seqno.
ALTER TABLE ton_inflight DROP CONSTRAINT ton_inflight_pkey;
ALTER TABLE ton_inflight
    ADD COLUMN body_hash     TEXT,
    ADD COLUMN valid_until   BIGINT,
    ADD COLUMN fencing_token BIGINT;
-- A row the keepers did not write (no body hash or valid_until in its entry) is kept, not
-- dropped: reading it still reports a journal that cannot be parsed, so nothing is signed over it.
UPDATE ton_inflight
SET body_hash     = COALESCE(entry->>'body_hash', ''),
    valid_until   = COALESCE((entry->>'valid_until')::BIGINT, 0),
    fencing_token = (entry->>'fencing_token')::BIGINT;
ALTER TABLE ton_inflight
    ALTER COLUMN body_hash SET NOT NULL,
    ALTER COLUMN valid_until SET NOT NULL;
ALTER TABLE ton_inflight ADD PRIMARY KEY (wallet, seqno);

-- The newest fencing token that ever wrote a wallet's journal: a write under an older token
-- (a holder that lost the lease and does not know it yet) fails in the same statement.
CREATE TABLE ton_journal_fence (
    wallet TEXT PRIMARY KEY,
    token  BIGINT NOT NULL
);
