-- Auto-freeze of points accounts (issue 16; DESIGN.md "Points"): one row per grant that
-- took an account over the global rule points.max in points.window, whether the account
-- was frozen (enforced) or the rule was in shadow mode (only counted and logged). The
-- grant's own apply script in the user's Redis slot decides; the gateway records it here
-- once per grant (and, when enforced, freezes the account with its audit row and event).
-- riskctl top points reads it.
CREATE TABLE points_autofreeze (
    grant_id   text PRIMARY KEY,
    user_id    text NOT NULL,
    gained     bigint NOT NULL CHECK (gained > 0),
    max_points bigint NOT NULL CHECK (max_points > 0),
    window_ms  bigint NOT NULL CHECK (window_ms > 0),
    mode       text NOT NULL CHECK (mode IN ('enforced', 'shadow')),
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX points_autofreeze_at ON points_autofreeze (at);
CREATE INDEX points_lots_granted ON points_lots (granted_at);
