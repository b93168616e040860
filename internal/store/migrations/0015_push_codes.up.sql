-- Push to tiers and partner code pools (issue 18 remainder; DESIGN.md "Push" and
-- "Partner code pools"). Additive: an older gateway or settler runs unchanged.

-- One push: a campaign's voucher issued to every user of some segments, a SKU per
-- segment ("tier"). digest is the SHA-256 of the canonical tiers, so the same push_id
-- with the same body is the same push and another body is a conflict. state:
-- escrowing (the row and its users are written; the budget and stock are not held yet),
-- running (held in Redis; users being issued from cursor on), done, refused (nothing was
-- taken; reason says why). The counters advance with the cursor, in one statement after
-- each batch is durable, so a batch redone after a crash is never counted twice.
CREATE TABLE pushes (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    push_id      text NOT NULL,
    tiers        jsonb NOT NULL,
    digest       text NOT NULL,
    -- nonce: 128 random bits, so a push's request ids (derived from nonce and user) cannot
    -- be guessed and taken first by a client.
    nonce        text NOT NULL,
    state        text NOT NULL DEFAULT 'escrowing'
                 CHECK (state IN ('escrowing', 'running', 'done', 'refused')),
    reason       text,
    total        bigint NOT NULL DEFAULT 0,
    issued       bigint NOT NULL DEFAULT 0,
    refused      jsonb NOT NULL DEFAULT '{}'::jsonb,
    cursor_user  text NOT NULL DEFAULT '',
    lease_owner  text,
    lease_until  timestamptz,
    actor        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (campaign_id, push_id)
);
CREATE INDEX pushes_runnable ON pushes (updated_at) WHERE state IN ('escrowing', 'running');

-- The users of a push, fixed when it is made (a segment changed later does not change
-- it): one row per user, the SKU of the first tier (by segment name) the user is in.
CREATE TABLE push_users (
    campaign_id  text NOT NULL,
    push_id      text NOT NULL,
    user_id      text NOT NULL,
    sku          text NOT NULL,
    PRIMARY KEY (campaign_id, push_id, user_id),
    FOREIGN KEY (campaign_id, push_id) REFERENCES pushes (campaign_id, push_id) ON DELETE CASCADE
);

-- Partner code pools: every external code imported for a SKU. The pool in Redis is the
-- codes not yet handed out; after a Redis loss it is rebuilt as the codes here that no
-- claim row holds (claims.partner_code) and no claim in flight holds. The key is the
-- campaign, not campaign_skus: a campaign PUT rewrites its SKU rows (DELETE + COPY), and
-- a cascade from them would drop every imported code with it.
CREATE TABLE sku_codes (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    sku          text NOT NULL,
    code         text NOT NULL,
    imported_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, sku, code)
);

-- The code a claim handed out (NULL for a SKU without a pool). Unique: a code is never
-- on two claims.
ALTER TABLE claims ADD COLUMN partner_code text;
CREATE UNIQUE INDEX claims_partner_code ON claims (campaign_id, sku, partner_code) WHERE partner_code IS NOT NULL;

ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile',
    'admin.points_task', 'points.freeze', 'points.unfreeze',
    'admin.delivery_retry', 'admin.push', 'admin.codes'));
