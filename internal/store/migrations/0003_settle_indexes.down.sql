ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_pkey;
ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_claim_id_kind_key UNIQUE (claim_id, kind);
ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_pkey PRIMARY KEY (id);
CREATE INDEX claims_user ON claims (user_id);
CREATE INDEX claims_campaign_sku ON claims (campaign_id, sku);
