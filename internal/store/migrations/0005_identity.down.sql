DROP INDEX IF EXISTS risk_audit_actor;
ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN ('rules.set', 'shadow', 'block', 'unblock')) NOT VALID;
DROP TRIGGER IF EXISTS claims_revoke_on_insert ON claims;
DROP FUNCTION IF EXISTS claims_revoke_on_insert();
DROP TABLE IF EXISTS revocations;
ALTER TABLE claims DROP COLUMN IF EXISTS revoked_at;
DROP INDEX IF EXISTS claims_user_claimed;
