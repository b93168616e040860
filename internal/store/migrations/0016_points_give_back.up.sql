-- A void after confirmation gives a points_item claim's points back once (issue 16;
-- DESIGN.md "Points: a void after confirmation"). A spend remembers which lots it took
-- from, so the give-back restores those lots (their own expiry, no new earning on a
-- day's caps); the give-back of each reservation is one row, whose hot step (the Redis
-- balance) is re-driven until it is done.
CREATE TABLE points_debits (
    source_id text NOT NULL,
    grant_id  text NOT NULL REFERENCES points_lots (grant_id),
    taken     bigint NOT NULL CHECK (taken > 0),
    PRIMARY KEY (source_id, grant_id)
);

CREATE TABLE points_give_backs (
    source_id text PRIMARY KEY,
    user_id   text NOT NULL,
    claim_id  text NOT NULL,
    -- points the give-back put back: what the spend took from lots not expired since
    -- (points whose lot expired meanwhile would have expired anyway: they stay expired)
    points    bigint NOT NULL CHECK (points >= 0),
    hot_done  boolean NOT NULL DEFAULT false,
    at        timestamptz NOT NULL DEFAULT now()
);

-- The settler's give-back pass looks for revoked claims; they are few.
CREATE INDEX claims_revoked ON claims (campaign_id) WHERE revoked_at IS NOT NULL;
