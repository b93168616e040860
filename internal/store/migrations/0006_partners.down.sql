ALTER TABLE claims DROP COLUMN channel;
DROP TABLE partner_quotas;
DROP TABLE partners;
