-- The operator's books. One row per consumed payment, written by the
-- Ledger actor from the replay store's outbox; `tx_hash` is unique, so a
-- drain that is repeated (a crash between commit and acknowledgement)
-- writes nothing twice.

CREATE TABLE payments (
    -- The cursor of the admin API's pages: ascending in write order.
    id              BIGSERIAL PRIMARY KEY,
    -- The canonical hash of the consumed payment (a proof's: of its
    -- challenge), lower-case 0x + 64 hex.
    tx_hash         TEXT        NOT NULL UNIQUE,
    -- 'charge' (a transfer was consumed) or 'proof' (a free route's
    -- challenge was claimed; amount 0, no block).
    kind            TEXT        NOT NULL CHECK (kind IN ('charge', 'proof')),
    -- The credential's scheme: 'hash', 'transaction', 'payment', ...
    scheme          TEXT        NOT NULL,
    payer           TEXT        NOT NULL,
    recipient       TEXT        NOT NULL,
    asset           TEXT        NOT NULL,
    -- Atomic units; 78 digits hold any uint256.
    amount          NUMERIC(78, 0) NOT NULL CHECK (amount >= 0),
    memo            TEXT,
    chain_id        BIGINT      NOT NULL,
    block_number    BIGINT      NOT NULL,
    block_time      TIMESTAMPTZ NOT NULL,
    -- `METHOD /target` of the consuming request, and the genome's price
    -- rule that priced it ('default' when none matched).
    resource        TEXT,
    route           TEXT        NOT NULL,
    -- SHA-256 of the request's Idempotency-Key material, when it had one.
    request_digest  TEXT,
    genome_id       TEXT        NOT NULL,
    consumed_at     TIMESTAMPTZ NOT NULL,
    -- `ledger.instance` of the instance that consumed it.
    instance        TEXT        NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX payments_consumed_at ON payments (consumed_at, id);
CREATE INDEX payments_payer ON payments (payer, id);
CREATE INDEX payments_route ON payments (route, id);

-- Payers refused before anything is consumed (tightening only).
CREATE TABLE payer_denials (
    payer       TEXT        PRIMARY KEY,
    reason      TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Outbox entries the ledger could not read as a record: kept here, with
-- the reason, rather than dropped or left to block the outbox.
CREATE TABLE outbox_rejects (
    id          BIGSERIAL   PRIMARY KEY,
    entry_key   TEXT        NOT NULL,
    value       BYTEA       NOT NULL,
    reason      TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per rejected entry, however often its batch is drained.
CREATE UNIQUE INDEX outbox_rejects_entry ON outbox_rejects (entry_key, md5(value));
