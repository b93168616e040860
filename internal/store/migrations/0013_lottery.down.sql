ALTER TABLE risk_audit DROP CONSTRAINT IF EXISTS risk_audit_action_check;
ALTER TABLE risk_audit ADD CONSTRAINT risk_audit_action_check CHECK (action IN (
    'rules.set', 'shadow', 'block', 'unblock', 'revoke',
    'admin.business_line', 'admin.campaign', 'admin.pause', 'admin.resume',
    'admin.segment', 'admin.reconcile',
    'admin.points_task', 'points.freeze', 'points.unfreeze'));
DROP TABLE IF EXISTS draws;
ALTER TABLE campaign_skus DROP COLUMN IF EXISTS weight;
ALTER TABLE campaigns DROP COLUMN IF EXISTS odds_version;
ALTER TABLE campaigns DROP COLUMN IF EXISTS no_prize_weight;
