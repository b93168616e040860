-- Lottery draws (issue 17; DESIGN.md "Lottery"). A lottery campaign's SKUs are prizes
-- with a weight, the campaign has a no-prize weight; odds_version names the odds the
-- draws were made under (frozen once the campaign starts, so one version per sale).
ALTER TABLE campaigns ADD COLUMN no_prize_weight bigint CHECK (no_prize_weight IS NULL OR no_prize_weight >= 0);
ALTER TABLE campaigns ADD COLUMN odds_version text;
ALTER TABLE campaign_skus ADD COLUMN weight bigint CHECK (weight IS NULL OR weight >= 0);

-- One row per draw, won or not, written by the settler from flash.claims in the same
-- transaction as the claim row of a won draw. draw_id is the claim_id of a won draw and
-- the draw_id answered for a no-prize draw. random is the uniform integer in
-- [0, total weight) the gateway drew with crypto/rand; pick is the prize that number
-- points at under the configured weights (NULL: the no-prize band), before stock and
-- budget; sku is what was won (NULL: no prize). The odds check tests pick against the
-- weights: it does not depend on what sold out.
CREATE TABLE draws (
    draw_id      text PRIMARY KEY,
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    request_id   text NOT NULL,
    user_id      text NOT NULL,
    device_id    text NOT NULL,
    channel      text NOT NULL DEFAULT 'app',
    odds_version text NOT NULL,
    random       bigint NOT NULL CHECK (random >= 0),
    pick         text,
    outcome      text NOT NULL CHECK (outcome IN ('won', 'no_prize')),
    sku          text,
    value        bigint NOT NULL DEFAULT 0 CHECK (value >= 0),
    drawn_at     timestamptz NOT NULL,
    UNIQUE (campaign_id, request_id),
    CHECK ((outcome = 'won') = (sku IS NOT NULL))
);

-- The admin retry of a dead-lettered prize delivery is audited (gateway/admin lottery.go).
ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile',
    'admin.points_task', 'points.freeze', 'points.unfreeze',
    'admin.delivery_retry'));
