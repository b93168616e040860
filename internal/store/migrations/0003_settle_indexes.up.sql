-- Fewer index insertions per settled claim (issue 6; the query-by-query survey and the
-- EXPLAIN plans are in DESIGN.md, "Indexes on the settle path"). Every claim the
-- settler writes is one claims row and one budget_ledger row, and every index on them
-- is one more B-tree insertion in the same transaction.

-- claims (campaign_id, sku) was only ever used for its campaign_id prefix (the
-- per-SKU figures, reports, reconciliation and rebuild filter on campaign_id and group
-- or hash-join by sku); the unique (campaign_id, request_id) index, which the settler
-- needs anyway, serves the same queries with the same plans.
DROP INDEX claims_campaign_sku;

-- claims (user_id) served only the segment split of the campaign report, as a nested
-- loop from a small segment's members; without it that query scans the campaign's
-- claims through (campaign_id, request_id), as the report's totals already do. Its
-- insertions land at random pages of a large B-tree, one per claim.
DROP INDEX claims_user;

-- budget_ledger's primary key on the bigserial id served no query. (claim_id, kind),
-- unique and NOT NULL already, becomes the primary key instead: one index fewer, the
-- same identity for replication, and the same ON CONFLICT (claim_id, kind) target.
-- (USING INDEX cannot take over an index that a constraint owns, so the key's index is
-- built afresh: the table is locked while it is, seconds per million ledger rows.)
ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_pkey;
ALTER TABLE budget_ledger DROP CONSTRAINT budget_ledger_claim_id_kind_key;
ALTER TABLE budget_ledger ADD CONSTRAINT budget_ledger_pkey PRIMARY KEY (claim_id, kind);
