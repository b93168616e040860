-- Prize delivery (issue 17; internal/delivery, DESIGN.md "Prize delivery"). A SKU with a
-- delivery webhook is fulfilled after its claim row is in Postgres: the row of
-- deliveries is created by the trigger below in the same statement as the claim row, so
-- a settled prize always has exactly one delivery, whatever settler wrote it.
ALTER TABLE campaign_skus ADD COLUMN delivery_webhook text
    CHECK (delivery_webhook IS NULL OR (delivery_webhook ~ '^https?://' AND length(delivery_webhook) <= 2048));
CREATE INDEX campaign_skus_delivered ON campaign_skus (campaign_id, sku) WHERE delivery_webhook IS NOT NULL;

CREATE TABLE deliveries (
    claim_id     text PRIMARY KEY REFERENCES claims (claim_id),
    campaign_id  text NOT NULL,
    sku          text NOT NULL,
    webhook      text NOT NULL,
    -- delivering: due at next_at (or being called while lease_until is ahead);
    -- delivered: the fulfilment server answered 2xx; failed: dead-lettered after the
    -- deliverer's most attempts (an admin retry makes it delivering again).
    state        text NOT NULL DEFAULT 'delivering' CHECK (state IN ('delivering', 'delivered', 'failed')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_at      timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,
    last_status  integer,
    last_error   text,
    delivered_at timestamptz,
    failed_at    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'delivering';
CREATE INDEX deliveries_failed ON deliveries (campaign_id) WHERE state = 'failed';

-- One statement-level trigger per INSERT into claims (the settler inserts a batch per
-- statement): a join of the batch with the few SKUs that have a webhook. No webhook SKU
-- anywhere: one probe of the partial index.
CREATE FUNCTION claims_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM campaign_skus WHERE delivery_webhook IS NOT NULL) THEN
        INSERT INTO deliveries (claim_id, campaign_id, sku, webhook)
        SELECT n.claim_id, n.campaign_id, n.sku, s.delivery_webhook
          FROM new_claims n
          JOIN campaign_skus s ON s.campaign_id = n.campaign_id AND s.sku = n.sku
         WHERE s.delivery_webhook IS NOT NULL
        ON CONFLICT (claim_id) DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER claims_deliveries AFTER INSERT ON claims
    REFERENCING NEW TABLE AS new_claims FOR EACH STATEMENT EXECUTE FUNCTION claims_deliveries();
