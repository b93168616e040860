-- The claim page's theme per campaign and partner (issue 20, CONTRACT.md "Faces"):
-- PUT /admin/v1/campaigns/{id}/page writes it, GET /h5/{campaign}[?partner=p] shows
-- it. partner '' is the campaign's own page; a partner's row overrides it for that
-- partner's users. Every text is validated by the gateway (gateway/h5) and shown by
-- the page as text only, never as markup. Additive: no existing table changes.
CREATE TABLE campaign_pages (
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    partner      text NOT NULL DEFAULT '',
    title        text NOT NULL,
    banner_url   text NOT NULL DEFAULT '',
    color_primary    text NOT NULL DEFAULT '#d0021b',
    color_background text NOT NULL DEFAULT '#fff8f0',
    color_text       text NOT NULL DEFAULT '#1a1a1a',
    rules_text   text NOT NULL DEFAULT '',
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, partner),
    CHECK (length(title) BETWEEN 1 AND 80),
    CHECK (length(banner_url) <= 512),
    CHECK (length(rules_text) <= 4000),
    CHECK (length(partner) <= 64),
    CHECK (color_primary ~ '^#[0-9a-f]{6}$' AND color_background ~ '^#[0-9a-f]{6}$' AND color_text ~ '^#[0-9a-f]{6}$')
);
