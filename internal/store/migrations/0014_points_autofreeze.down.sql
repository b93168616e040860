DROP INDEX IF EXISTS points_lots_granted;
DROP TABLE IF EXISTS points_autofreeze;
