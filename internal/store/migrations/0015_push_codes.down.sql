ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile',
    'admin.points_task', 'points.freeze', 'points.unfreeze', 'admin.delivery_retry'));
DROP INDEX IF EXISTS claims_partner_code;
ALTER TABLE claims DROP COLUMN IF EXISTS partner_code;
DROP TABLE IF EXISTS sku_codes;
DROP TABLE IF EXISTS push_users;
DROP TABLE IF EXISTS pushes;
