-- flash.events' outbox (internal/events, DESIGN.md "Events"): a change of a voucher's or a
-- points account's life writes its event row in the same transaction as the change, and
-- the settler's publisher sends unpublished rows to flash.events in id order, then marks
-- them. Delivery is at least once; the id is the event's identity, consumers drop repeats.
CREATE TABLE events (
    id           bigserial PRIMARY KEY,
    type         text NOT NULL CHECK (type ~ '^[a-z][a-z_.]{0,63}$'),
    -- the Kafka record key: the claim id or user id the event is about (per-key order)
    key          text NOT NULL CHECK (key <> '' AND length(key) <= 256),
    body         jsonb NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX events_unpublished ON events (id) WHERE published_at IS NULL;
