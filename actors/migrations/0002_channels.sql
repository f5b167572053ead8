-- Payment channels (MPP sessions) in the books: one row per channel with
-- its cumulative amounts as of its last change, and its events. Written
-- by the Ledger actor from the channel states the outbox logged, in the
-- same transaction as the payments of the batch; a channel's row is
-- locked while its events are derived, so two instances draining the
-- same entries write each event once.
--
-- The amounts add up exactly: for a channel, `open.total` (what the chain
-- had settled when the gate first saw it) plus the sum of its `voucher`
-- amounts is `accepted`; plus the sum of its `usage` amounts is `spent`;
-- plus the sum of its `settlement` amounts is `settled`.

CREATE TABLE channels (
    -- `<chain id>:<escrow>:<channel id>`, the channel book's name.
    channel     TEXT           PRIMARY KEY,
    chain_id    BIGINT         NOT NULL,
    escrow      TEXT           NOT NULL,
    channel_id  TEXT           NOT NULL,
    payer       TEXT           NOT NULL,
    payee       TEXT           NOT NULL,
    token       TEXT           NOT NULL,
    deposit     NUMERIC(78, 0) NOT NULL,
    -- The highest voucher accepted.
    accepted    NUMERIC(78, 0) NOT NULL,
    -- What served requests consumed.
    spent       NUMERIC(78, 0) NOT NULL,
    -- Requests served.
    served      BIGINT         NOT NULL,
    -- Settled on chain, as last read.
    settled     NUMERIC(78, 0) NOT NULL,
    closing     BOOLEAN        NOT NULL,
    finalized   BOOLEAN        NOT NULL,
    opened_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ    NOT NULL DEFAULT now()
);

CREATE INDEX channels_payer ON channels (payer);

CREATE TABLE channel_events (
    id          BIGSERIAL      PRIMARY KEY,
    channel     TEXT           NOT NULL REFERENCES channels (channel),
    -- open: first seen (amount: the deposit; total: settled then);
    -- voucher: a voucher accepted (amount: the increase; total: accepted);
    -- usage: requests served since the last usage event, aggregated per
    --   batch (amount: what they cost; requests: how many; total: spent);
    -- settlement: settled on chain rose (amount: by how much; total);
    -- close: a close was requested; finalized: the chain closed it.
    kind        TEXT           NOT NULL
                CHECK (kind IN ('open', 'voucher', 'usage', 'settlement', 'close', 'finalized')),
    amount      NUMERIC(78, 0) NOT NULL,
    total       NUMERIC(78, 0) NOT NULL,
    requests    BIGINT         NOT NULL DEFAULT 0,
    recorded_at TIMESTAMPTZ    NOT NULL DEFAULT now()
);

CREATE INDEX channel_events_channel ON channel_events (channel, id);
CREATE INDEX channel_events_recorded_at ON channel_events (recorded_at, id);
