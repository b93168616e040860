ALTER TABLE campaign_skus DROP COLUMN IF EXISTS points;
ALTER TABLE campaigns DROP COLUMN IF EXISTS kind;
ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile')) NOT VALID;
DROP TABLE IF EXISTS points_refusals;
DROP TABLE IF EXISTS points_accounts;
DROP TABLE IF EXISTS points_ledger;
DROP TABLE IF EXISTS points_lots;
DROP TABLE IF EXISTS points_tasks;
