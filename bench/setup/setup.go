// Package setup owns bench's creation of a load-test campaign through the gateway's
// admin API (PUT /admin/v1/business-lines/{id}, PUT /admin/v1/campaigns/{id}), so a
// test exercises the same path an operator uses and Redis is warmed by the gateway
// itself, never written around it.
package setup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/flashgate/flashgate/bench/traffic"
)

// SKU is one item of the campaign.
type SKU struct {
	SKU   string `json:"sku"`
	Stock int64  `json:"stock"`
	Value int64  `json:"value"`
	// Points is a points_item SKU's price (the points mall model, points.go).
	Points int64 `json:"points,omitempty"`
	// Weight and Delivery are a lottery prize's (the lottery model, lottery.go).
	Weight   *int64    `json:"weight,omitempty"`
	Delivery *Delivery `json:"delivery,omitempty"`
}

// Delivery is a lottery prize's fulfilment webhook.
type Delivery struct {
	Webhook string `json:"webhook"`
}

// ParseSKUs reads "rp-50:2000:50,rp-100:1000:100" (sku:stock:value, ...).
func ParseSKUs(s string) ([]SKU, error) {
	var out []SKU
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("skus: %q is not sku:stock:value (like rp-50:2000:50)", part)
		}
		stock, err1 := strconv.ParseInt(f[1], 10, 64)
		value, err2 := strconv.ParseInt(f[2], 10, 64)
		switch {
		case !traffic.ValidID(f[0]):
			return nil, fmt.Errorf("skus: %q: the sku must be 1-64 characters of [A-Za-z0-9._:-]", f[0])
		case seen[f[0]]:
			return nil, fmt.Errorf("skus: %q appears twice", f[0])
		case err1 != nil || stock < 0:
			return nil, fmt.Errorf("skus: %q: stock %q is not a whole number ≥ 0", f[0], f[1])
		case err2 != nil || value <= 0:
			return nil, fmt.Errorf("skus: %q: value %q is not a whole number > 0", f[0], f[2])
		}
		seen[f[0]] = true
		out = append(out, SKU{SKU: f[0], Stock: stock, Value: value})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("skus: at least one sku:stock:value is required")
	}
	return out, nil
}

// Config is what to create.
type Config struct {
	// Admin is the admin API's base URL; Token its bearer token (may be empty on a
	// loopback gateway without one).
	Admin, Token string
	Campaign     string
	Name         string
	BusinessLine string
	// BLBudget is the business line's total budget (0: the campaign's budget).
	BLBudget int64
	// Budget is the campaign's budget (0: the face value of all its stock).
	Budget       int64
	SKUs         []SKU
	PerUserLimit int64
	// StartsIn is how long from now the campaign opens; Duration how long it runs.
	StartsIn, Duration time.Duration
	VoucherTTL         time.Duration
	Segment            string
	// Points, when its Price is set, makes the campaign a points_item one and gives
	// its users their balances (points.go).
	Points Points
	// Lottery, when it has prizes, makes the campaign a lottery with those prizes as
	// its SKUs (lottery.go); SKUs must then be empty.
	Lottery Lottery
	// Client is the HTTP client (default: one with a 10 s timeout).
	Client *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Campaign is the body sent to PUT /admin/v1/campaigns/{id}.
type Campaign struct {
	Name         string    `json:"name"`
	BusinessLine string    `json:"business_line"`
	StartsAt     time.Time `json:"starts_at"`
	EndsAt       time.Time `json:"ends_at"`
	PerUserLimit int64     `json:"per_user_limit"`
	Budget       int64     `json:"budget"`
	VoucherTTL   string    `json:"voucher_ttl"`
	Segment      *string   `json:"segment"`
	// Kind is "points_item" in the points mall model (points.go), "lottery" in the
	// lottery model (lottery.go), else omitted.
	Kind string `json:"kind,omitempty"`
	// NoPrizeWeight is a lottery's no-prize band (lottery.go).
	NoPrizeWeight *int64 `json:"no_prize_weight,omitempty"`
	SKUs          []SKU  `json:"skus"`
}

// Made is what setup created.
type Made struct {
	Campaign     string   `json:"campaign"`
	BusinessLine string   `json:"business_line"`
	BLBudget     int64    `json:"business_line_budget"`
	Body         Campaign `json:"definition"`
	// PointsTask and PointsFunded: the points mall model's task and the users given
	// their balance (points.go).
	PointsTask   string `json:"points_task,omitempty"`
	PointsFunded int    `json:"points_funded,omitempty"`
}

// Validate checks the configuration; Run calls it too.
func (c *Config) Validate() error {
	u, err := url.Parse(c.Admin)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("admin %q: want a base URL like http://127.0.0.1:8081", c.Admin)
	case !traffic.ValidID(c.Campaign):
		return fmt.Errorf("campaign %q: must be 1-64 characters of [A-Za-z0-9._:-]", c.Campaign)
	case !traffic.ValidID(c.BusinessLine):
		return fmt.Errorf("business-line %q: must be 1-64 characters of [A-Za-z0-9._:-]", c.BusinessLine)
	case c.Lottery.on() && len(c.SKUs) > 0:
		return fmt.Errorf("skus: a lottery's SKUs are its prizes: give --lottery, not --skus")
	case c.Lottery.on() && c.Points.Price > 0:
		return fmt.Errorf("points-price: a lottery draw does not cost points yet (give --lottery or --points-price, not both)")
	case len(c.SKUs) == 0 && !c.Lottery.on():
		return fmt.Errorf("skus: at least one sku:stock:value is required (or --lottery for a lottery)")
	case c.PerUserLimit < 1:
		return fmt.Errorf("per-user-limit %d: must be at least 1", c.PerUserLimit)
	case c.Duration <= 0:
		return fmt.Errorf("duration %s: must be more than 0", c.Duration)
	case c.StartsIn < 0:
		return fmt.Errorf("starts-in %s: must not be negative", c.StartsIn)
	case c.VoucherTTL <= 0:
		return fmt.Errorf("voucher-ttl %s: must be more than 0", c.VoucherTTL)
	case c.Budget < 0:
		return fmt.Errorf("budget %d: must not be negative", c.Budget)
	case c.BLBudget < 0:
		return fmt.Errorf("bl-budget %d: must not be negative", c.BLBudget)
	case c.Segment != "" && !traffic.ValidID(c.Segment):
		return fmt.Errorf("segment %q: must be 1-64 characters of [A-Za-z0-9._:-]", c.Segment)
	}
	if err := c.Lottery.validate(); err != nil {
		return err
	}
	return c.Points.validate()
}

// Run creates (or updates, before it starts) the business line and the campaign.
func Run(ctx context.Context, cfg Config) (*Made, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Name == "" {
		cfg.Name = "bench " + cfg.Campaign
	}
	if cfg.Lottery.on() {
		cfg.SKUs = append([]SKU(nil), cfg.Lottery.Prizes...)
	}
	if cfg.Budget == 0 {
		for _, s := range cfg.SKUs {
			cfg.Budget += s.Stock * s.Value
		}
	}
	if cfg.BLBudget == 0 {
		cfg.BLBudget = cfg.Budget
	}
	start := cfg.Now().Add(cfg.StartsIn).UTC().Truncate(time.Millisecond)
	body := Campaign{Name: cfg.Name, BusinessLine: cfg.BusinessLine, StartsAt: start, EndsAt: start.Add(cfg.Duration),
		PerUserLimit: cfg.PerUserLimit, Budget: cfg.Budget, VoucherTTL: cfg.VoucherTTL.String(), SKUs: cfg.SKUs}
	if cfg.Segment != "" {
		body.Segment = &cfg.Segment
	}
	base := strings.TrimRight(cfg.Admin, "/")
	if err := put(ctx, cfg, base+"/admin/v1/business-lines/"+url.PathEscape(cfg.BusinessLine),
		map[string]int64{"budget": cfg.BLBudget}); err != nil {
		return nil, fmt.Errorf("create business line %s: %w", cfg.BusinessLine, err)
	}
	if cfg.Lottery.on() {
		cfg.Lottery.apply(&body)
	}
	if cfg.Points.Price > 0 {
		body.Kind = "points_item"
		for i := range body.SKUs {
			body.SKUs[i].Points = cfg.Points.Price
		}
	}
	if err := put(ctx, cfg, base+"/admin/v1/campaigns/"+url.PathEscape(cfg.Campaign), body); err != nil {
		return nil, fmt.Errorf("create campaign %s: %w", cfg.Campaign, err)
	}
	made := &Made{Campaign: cfg.Campaign, BusinessLine: cfg.BusinessLine, BLBudget: cfg.BLBudget, Body: body}
	if cfg.Points.Price > 0 {
		if err := fund(ctx, cfg, base, made); err != nil {
			return nil, err
		}
	}
	return made, nil
}

func put(ctx context.Context, cfg Config, u string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.Token)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (set FLASH_ADMIN_TOKEN or --token to the gateway's admin token)"
		}
		return fmt.Errorf("PUT %s: %s: %s%s", u, resp.Status, bytes.TrimSpace(msg), hint)
	}
	return nil
}

// Print writes what was made for a person.
func (m *Made) Print(w io.Writer) {
	fmt.Fprintf(w, "business line %s: budget %d\n", m.BusinessLine, m.BLBudget)
	b := m.Body
	fmt.Fprintf(w, "campaign %s (%q): opens %s, ends %s, budget %d, per-user limit %d, voucher ttl %s\n",
		m.Campaign, b.Name, b.StartsAt.Format(time.RFC3339Nano), b.EndsAt.Format(time.RFC3339), b.Budget, b.PerUserLimit, b.VoucherTTL)
	if b.NoPrizeWeight != nil {
		total := *b.NoPrizeWeight
		for _, s := range b.SKUs {
			if s.Weight != nil {
				total += *s.Weight
			}
		}
		fmt.Fprintf(w, "  lottery: no-prize weight %d of %d (%.4f%%)\n", *b.NoPrizeWeight, total, 100*float64(*b.NoPrizeWeight)/float64(total))
	}
	for _, s := range b.SKUs {
		fmt.Fprintf(w, "  sku %s: stock %d × value %d", s.SKU, s.Stock, s.Value)
		if s.Weight != nil {
			fmt.Fprintf(w, ", weight %d", *s.Weight)
		}
		if s.Delivery != nil {
			fmt.Fprintf(w, ", delivered to %s", s.Delivery.Webhook)
		}
		fmt.Fprintln(w)
	}
}
