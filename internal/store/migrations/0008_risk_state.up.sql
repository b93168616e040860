-- The current risk state riskctl sets (issue 21.4): Postgres is its record, Redis a copy
-- that recovery rebuilds from here when Redis lost it (internal/risk/riskstate,
-- DESIGN.md "Risk state survives Redis"). One row per audit scope - 'global' and
-- 'campaign:<id>' hold that level's rules (shadow included), 'device:<id>', 'ip:<addr>'
-- and 'user:<id>' the block in force ({} once lifted: the rebuild then also removes a
-- freeze set before the unblock). state has the form of risk_audit.new; the row is
-- written in the same transaction as the audit row of the change (audit.Apply).
CREATE TABLE risk_state (
    scope      text PRIMARY KEY CHECK (scope <> ''),
    state      jsonb NOT NULL,
    -- when a block ends (NULL for rules and lifted blocks): the rebuild skips ended ones
    expires_at timestamptz,
    audit_id   bigint NOT NULL REFERENCES risk_audit (id),
    updated_at timestamptz NOT NULL
);

-- Backfill from the audit trail: the last riskctl change of each scope is its state.
INSERT INTO risk_state (scope, state, expires_at, audit_id, updated_at)
SELECT DISTINCT ON (scope) scope, new,
       CASE WHEN new ? 'block.expires_at' THEN (new->>'block.expires_at')::timestamptz END,
       id, at
  FROM risk_audit
 WHERE action IN ('rules.set', 'shadow', 'block', 'unblock')
 ORDER BY scope, id DESC;
