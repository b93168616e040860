-- The voucher's life (CONTRACT.md "Issuance and the voucher's life", issue 18): redeem
-- against an order and its rollback, transfer between users. Additive: every new column
-- has a default that keeps today's behaviour (no minimum, nothing excluded, not
-- transferable), so an older gateway or settler runs unchanged on this schema.

ALTER TABLE campaign_skus
    ADD COLUMN min_spend bigint NOT NULL DEFAULT 0 CHECK (min_spend >= 0),
    ADD COLUMN excluded_categories text[] NOT NULL DEFAULT '{}';

ALTER TABLE campaigns
    ADD COLUMN transferable boolean NOT NULL DEFAULT false,
    ADD COLUMN max_transfers integer NOT NULL DEFAULT 1 CHECK (max_transfers >= 0);

-- The order a redeemed voucher was used on (NULL for a body-less redeem, and after a
-- rollback). hops counts the transfers the voucher has made.
ALTER TABLE claims
    ADD COLUMN order_id text,
    ADD COLUMN order_amount bigint,
    ADD COLUMN order_category text,
    ADD COLUMN hops integer NOT NULL DEFAULT 0;

-- Every use against an order, kept across rollbacks: the review's amounts and the
-- audit of refunds. One row per (claim, order); rolled_back_at set by the refund.
CREATE TABLE redemptions (
    claim_id        text NOT NULL REFERENCES claims(claim_id),
    order_id        text NOT NULL,
    amount          bigint NOT NULL CHECK (amount >= 0),
    category        text NOT NULL,
    redeemed_at     timestamptz NOT NULL DEFAULT now(),
    rolled_back_at  timestamptz,
    PRIMARY KEY (claim_id, order_id)
);

-- The transfer chain: hop 1 is the first move away from the claimer.
CREATE TABLE transfers (
    claim_id     text NOT NULL REFERENCES claims(claim_id),
    hop          integer NOT NULL CHECK (hop >= 1),
    from_user    text NOT NULL,
    to_user      text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (claim_id, hop)
);
CREATE INDEX transfers_from_at ON transfers (from_user, at);
