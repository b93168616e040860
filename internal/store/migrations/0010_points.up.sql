-- The points mall's accounts (issue 16; DESIGN.md "Points"). Postgres is the record: a
-- ledger whose sum per user is the balance, lots (one per grant) with their expiry, the
-- tasks (grant sources) with their caps and key digest, frozen accounts, refused grants.

-- A grant source: a task with its caps, points lifetime, and the SHA-256 of its key
-- (a random 256-bit secret shown once, like a partner's).
CREATE TABLE points_tasks (
    id                 text PRIMARY KEY,
    name               text NOT NULL,
    per_grant_max      bigint NOT NULL CHECK (per_grant_max > 0),
    per_user_daily_max bigint NOT NULL CHECK (per_user_daily_max > 0),
    lifetime_seconds   bigint NOT NULL CHECK (lifetime_seconds > 0),
    key_sha256         bytea NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    key_rotated_at     timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- One lot per accepted grant: what it gave, what is left of it, when it expires. The
-- body digest answers a repeated grant_id (same body: same answer; another: 409).
CREATE TABLE points_lots (
    grant_id    text PRIMARY KEY,
    user_id     text NOT NULL,
    task_id     text NOT NULL REFERENCES points_tasks (id),
    amount      bigint NOT NULL CHECK (amount > 0),
    remaining   bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    body_sha256 bytea NOT NULL,
    -- the calendar day (in FLASH_POINTS_TZ) the grant counts against the daily caps
    day         date NOT NULL,
    granted_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX points_lots_user ON points_lots (user_id, expires_at) WHERE remaining > 0;
CREATE INDEX points_lots_day ON points_lots (user_id, day, task_id);

-- The ledger: every change of a balance, signed. sum(delta) per user is the balance.
-- A source (a grant, a claim, a lot's expiry) writes one row per kind, once.
CREATE TABLE points_ledger (
    id        bigserial PRIMARY KEY,
    user_id   text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('grant', 'spend', 'expire', 'give_back')),
    source_id text NOT NULL,
    task_id   text,
    delta     bigint NOT NULL CHECK (delta <> 0),
    at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, kind)
);
CREATE INDEX points_ledger_user ON points_ledger (user_id);

-- Frozen accounts (the risk team): a frozen account spends nothing (it still earns: the
-- record of what its sources reported stays whole).
CREATE TABLE points_accounts (
    user_id    text PRIMARY KEY,
    frozen     boolean NOT NULL DEFAULT false,
    reason     text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Grants refused whole for the risk team (grant_ceiling: a source reported more than
-- per_grant_max). One row per refused grant_id.
CREATE TABLE points_refusals (
    grant_id  text NOT NULL,
    task_id   text NOT NULL,
    user_id   text NOT NULL,
    amount    bigint NOT NULL,
    reason    text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (grant_id, reason)
);

-- Redemption kinds (CONTRACT.md): a campaign has one kind; a points_item SKU has a price
-- in points. Constant defaults add the columns without rewriting the tables.
ALTER TABLE campaigns ADD COLUMN kind text NOT NULL DEFAULT 'voucher'
    CHECK (kind IN ('voucher', 'points_item', 'lottery'));
ALTER TABLE campaign_skus ADD COLUMN points bigint CHECK (points IS NULL OR points > 0);

ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile',
    'admin.points_task', 'points.freeze', 'points.unfreeze'));
