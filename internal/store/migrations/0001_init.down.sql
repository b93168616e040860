DROP TABLE IF EXISTS segment_members, segments, budget_ledger, claims, campaign_skus, campaigns, business_lines;
