-- Partners and channels (issue 14; DESIGN.md "Partners"). Additive only: a claims row
-- written by a settler that does not know channels gets 'app', which is what it was.

-- A partner back end claims for its own users with X-Partner-Key. The key is a random
-- 256-bit secret shown once; only its SHA-256 is kept (docs/SECURITY.md "Partner keys").
CREATE TABLE partners (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    key_sha256  bytea NOT NULL UNIQUE CHECK (length(key_sha256) = 32),
    key_rotated_at timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- How many claims a partner may make in a campaign. claim.lua takes from it in the same
-- step as the stock; Redis holds what was taken (fg:{campaign}:pq).
CREATE TABLE partner_quotas (
    partner_id  text NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    campaign_id text NOT NULL REFERENCES campaigns (id),
    quota       bigint NOT NULL CHECK (quota >= 0),
    PRIMARY KEY (partner_id, campaign_id)
);
CREATE INDEX partner_quotas_campaign ON partner_quotas (campaign_id);

-- Where each claim came from: 'app', 'partner:<id>' or 'push:<id>'. A constant default
-- adds the column without rewriting the table.
ALTER TABLE claims ADD COLUMN channel text NOT NULL DEFAULT 'app';
