DROP TABLE IF EXISTS draws;
ALTER TABLE campaign_skus DROP COLUMN IF EXISTS weight;
ALTER TABLE campaigns DROP COLUMN IF EXISTS odds_version;
ALTER TABLE campaigns DROP COLUMN IF EXISTS no_prize_weight;
