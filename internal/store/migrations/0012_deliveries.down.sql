DROP TRIGGER IF EXISTS claims_deliveries ON claims;
DROP FUNCTION IF EXISTS claims_deliveries();
DROP TABLE IF EXISTS deliveries;
DROP INDEX IF EXISTS campaign_skus_delivered;
ALTER TABLE campaign_skus DROP COLUMN IF EXISTS delivery_webhook;
