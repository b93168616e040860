DROP INDEX IF EXISTS claims_revoked;
DROP TABLE IF EXISTS points_give_backs;
DROP TABLE IF EXISTS points_debits;
