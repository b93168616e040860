DROP TABLE campaign_pages;
