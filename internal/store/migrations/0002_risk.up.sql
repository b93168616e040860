-- The risk team's audit trail (CONTRACT.md guarantee 6: who, when, old, new). riskctl
-- writes one row per change of live risk state in Redis - rules, shadow mode, blocks -
-- inside the same Postgres transaction that it commits only after the Redis write
-- succeeded (see docs/RISK.md "Audit"). Rows are never updated or deleted by flashgate.
CREATE TABLE risk_audit (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL CHECK (actor <> ''),
    -- rules.set (thresholds), shadow (on/off), block, unblock
    action  text NOT NULL CHECK (action IN ('rules.set', 'shadow', 'block', 'unblock')),
    -- 'global', 'campaign:<id>', 'device:<id>', 'ip:<addr>' or 'user:<id>'
    scope   text NOT NULL CHECK (scope <> ''),
    -- the state before and after: rule key -> value for rules, the block entries
    -- (reason, expiry) for blocks; {} when there was none
    old     jsonb NOT NULL,
    new     jsonb NOT NULL,
    reason  text NOT NULL DEFAULT ''
);
CREATE INDEX risk_audit_at ON risk_audit (at);
CREATE INDEX risk_audit_scope ON risk_audit (scope, at);
