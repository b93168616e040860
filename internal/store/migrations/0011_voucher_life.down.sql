DROP TABLE IF EXISTS transfers;
DROP TABLE IF EXISTS redemptions;
ALTER TABLE claims DROP COLUMN IF EXISTS hops, DROP COLUMN IF EXISTS order_category,
    DROP COLUMN IF EXISTS order_amount, DROP COLUMN IF EXISTS order_id;
ALTER TABLE campaigns DROP COLUMN IF EXISTS max_transfers, DROP COLUMN IF EXISTS transferable;
ALTER TABLE campaign_skus DROP COLUMN IF EXISTS excluded_categories, DROP COLUMN IF EXISTS min_spend;
