-- Trust at the edge (issue 14): the caller's own vouchers, revocations, and the audit
-- of admin changes. Additive: nothing existing changes meaning, so older binaries run
-- against this schema unchanged.

-- GET /v1/me/claims: a user's vouchers newest first, paged by (claimed_at, claim_id).
-- One more B-tree insertion per settled claim (DESIGN.md "Indexes on the settle path":
-- 0003 had dropped claims (user_id) for that cost; this one serves a query that needs it).
CREATE INDEX IF NOT EXISTS claims_user_claimed ON claims (user_id, claimed_at DESC, claim_id DESC);

-- riskctl revoke: a revoked voucher keeps its state column ('settled' until the
-- settler's expirer gives its value back and marks it 'expired'); revoked_at says it was
-- voided, and the API shows it as "revoked" and refuses to redeem it.
ALTER TABLE claims ADD COLUMN IF NOT EXISTS revoked_at timestamptz;

-- Who was revoked, so that claims accepted before the revocation but settled after it
-- (pending in Redis at the time) are voided as they arrive (claims_revoke_on_insert).
CREATE TABLE IF NOT EXISTS revocations (
    kind    text NOT NULL CHECK (kind IN ('user', 'device')),
    value   text NOT NULL CHECK (value <> ''),
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL CHECK (actor <> ''),
    reason  text NOT NULL CHECK (reason <> ''),
    PRIMARY KEY (kind, value, at)
);

-- A claim settling for a revoked user or device, accepted before the revocation, is
-- voided on insert the way riskctl revoke voids a settled one: due at once, so the
-- expirer releases its value (once, through release.lua's guard) on its next pass.
-- Its cost on the settle path: one probe of revocations' primary key per row, a
-- table of a few rows.
CREATE OR REPLACE FUNCTION claims_revoke_on_insert() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM revocations r
               WHERE ((r.kind = 'user' AND r.value = NEW.user_id) OR (r.kind = 'device' AND r.value = NEW.device_id))
                 AND r.at >= NEW.claimed_at) THEN
        NEW.revoked_at := now();
        NEW.expires_at := LEAST(NEW.expires_at, NEW.claimed_at);
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS claims_revoke_on_insert ON claims;
CREATE TRIGGER claims_revoke_on_insert BEFORE INSERT ON claims
    FOR EACH ROW WHEN (NEW.state = 'settled') EXECUTE FUNCTION claims_revoke_on_insert();

-- The audit trail now also holds the admin API's changes and revocations; the actor is
-- the admin token's name or riskctl's --actor.
ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile'));
CREATE INDEX IF NOT EXISTS risk_audit_actor ON risk_audit (actor, at);
