-- flashgate's books. Postgres is the record for campaigns and for every accepted claim;
-- Redis holds the live counters that the claim script decides on.

CREATE TABLE business_lines (
    id          text PRIMARY KEY,
    budget      bigint NOT NULL CHECK (budget >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    business_line   text NOT NULL REFERENCES business_lines(id),
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    per_user_limit  integer NOT NULL CHECK (per_user_limit >= 1),
    budget          bigint NOT NULL CHECK (budget >= 0),
    voucher_ttl_ms  bigint NOT NULL CHECK (voucher_ttl_ms > 0),
    segment         text,
    recycle_stock   boolean NOT NULL DEFAULT false,
    paused          boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

CREATE TABLE campaign_skus (
    campaign_id  text NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    sku          text NOT NULL,
    stock        integer NOT NULL CHECK (stock >= 0),
    value        bigint NOT NULL CHECK (value > 0),
    PRIMARY KEY (campaign_id, sku)
);

-- One row per accepted claim, written by the settler. claim_id is the idempotency
-- anchor for redelivery from Kafka: inserts are ON CONFLICT DO NOTHING.
CREATE TABLE claims (
    claim_id        text PRIMARY KEY,
    request_id      text NOT NULL,
    campaign_id     text NOT NULL,
    business_line   text NOT NULL,
    sku             text NOT NULL,
    user_id         text NOT NULL,
    device_id       text NOT NULL,
    ip              text NOT NULL,
    value           bigint NOT NULL CHECK (value > 0),
    claimed_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    state           text NOT NULL DEFAULT 'settled' CHECK (state IN ('settled', 'redeemed', 'expired')),
    redeemed_at     timestamptz,
    expired_at      timestamptz,
    settled_at      timestamptz NOT NULL DEFAULT now(),
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL
);
CREATE UNIQUE INDEX claims_campaign_request ON claims (campaign_id, request_id);
CREATE INDEX claims_campaign_sku ON claims (campaign_id, sku);
CREATE INDEX claims_user ON claims (user_id);
CREATE INDEX claims_expiring ON claims (expires_at) WHERE state = 'settled';

-- The budget ledger: every movement of money against a campaign and its business line.
-- 'reserve' when a voucher is handed out (its face value), 'release' when it expires
-- unused (budget recovery). A redeemed voucher's reservation is final (the write-off is
-- the claim's state, not a money movement). UNIQUE (claim_id, kind) makes each movement
-- happen at most once, whoever retries it.
CREATE TABLE budget_ledger (
    id             bigserial PRIMARY KEY,
    claim_id       text NOT NULL REFERENCES claims(claim_id),
    campaign_id    text NOT NULL,
    business_line  text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('reserve', 'release')),
    amount         bigint NOT NULL CHECK (amount > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (claim_id, kind)
);
CREATE INDEX budget_ledger_campaign ON budget_ledger (campaign_id, kind);
CREATE INDEX budget_ledger_business_line ON budget_ledger (business_line, kind);

CREATE TABLE segments (
    name        text PRIMARY KEY,
    size        integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE segment_members (
    segment  text NOT NULL REFERENCES segments(name) ON DELETE CASCADE,
    user_id  text NOT NULL,
    PRIMARY KEY (segment, user_id)
);
