-- Signed webhooks (Standard Webhooks). One row per event per endpoint,
-- inserted by the Ledger actor in the transaction that adds the event's
-- payment row, so a delivery exists exactly when its row does; sent by
-- the webhook dispatcher of any instance, which claims due rows with
-- FOR UPDATE SKIP LOCKED and a lease (next_attempt_at moved past the
-- attempt's timeout), so one instance at a time attempts each.

CREATE TABLE webhook_deliveries (
    -- The cursor of listings: ascending in creation order.
    id               BIGSERIAL   PRIMARY KEY,
    -- The `webhook-id` header: 'msg_' + a digest of the event and the
    -- endpoint's name, the same on every attempt and every re-drain.
    message_id       TEXT        NOT NULL UNIQUE,
    -- The endpoint's name in `[webhooks.endpoints]`, and the URL it was
    -- last sent to (the configured one at each attempt).
    endpoint         TEXT        NOT NULL,
    url              TEXT        NOT NULL,
    -- 'payment.consumed'; one more event type is one more value here.
    event_type       TEXT        NOT NULL,
    -- What the event is about: a payment's tx_hash for payment.consumed.
    subject          TEXT        NOT NULL,
    -- The body sent, as signed.
    payload          JSONB       NOT NULL,
    state            TEXT        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'delivered', 'dead')),
    -- Attempts started (counted when claimed).
    attempts         INT         NOT NULL DEFAULT 0,
    -- Claims ever made (never reset, unlike attempts on a requeue): the
    -- fence an attempt's end must match to be recorded.
    claims           BIGINT      NOT NULL DEFAULT 0,
    -- When a pending delivery is due; while one is being attempted, the
    -- end of its lease.
    next_attempt_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_attempt_at  TIMESTAMPTZ,
    -- The last attempt's HTTP status (NULL: no answer), and why it failed:
    -- a status, a timeout, a connection error. Never a secret.
    last_status      INT,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Set by `settlegate ledger webhooks requeue`: the age limit counts
    -- from here after a requeue.
    requeued_at      TIMESTAMPTZ,
    delivered_at     TIMESTAMPTZ
);

-- The dispatcher's query: the due pending deliveries, oldest first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
-- Listings by state (dead letters, the backlog).
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, id);
CREATE INDEX webhook_deliveries_subject ON webhook_deliveries (subject);
