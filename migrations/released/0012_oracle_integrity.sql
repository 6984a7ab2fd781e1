-- Oracle integrity: the bridge keeper's verdict history (for confirmed verdicts across
-- restarts and --once runs) and the pricing keeper's decision log (why each price was, or was
-- not, published at each tick).

-- One row per bridge: consecutive critical ticks per signal, the last status, recovery count.
CREATE TABLE bridge_health_verdicts (
    bridge_id  INTEGER PRIMARY KEY,
    history    JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per asset per pricing tick.
CREATE TABLE pricing_oracle_decisions (
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
CREATE INDEX pricing_oracle_decisions_asset_tick
    ON pricing_oracle_decisions (asset, tick_at, id);
