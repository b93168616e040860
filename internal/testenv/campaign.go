package testenv

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
)

// BusinessLine creates a business line with a fresh id.
func (e *Env) BusinessLine(budget int64) string {
	e.T.Helper()
	id := ID(e.T, "bl")
	if err := e.Cat.PutBusinessLine(Ctx(e.T, 10*time.Second), id, budget); err != nil {
		e.T.Fatal(err)
	}
	return id
}

// SKU is one item of a test campaign.
type SKU struct {
	SKU          string
	Stock, Value int64
	// A lottery prize's weight and delivery webhook ("" for none).
	Weight  int64
	Webhook string
}

// Spec describes a test campaign; zero fields get defaults (a business line of its own
// with a budget of 1e9, open from a minute ago for an hour, one claim per user, a budget
// of 1e9, a voucher TTL of 72h, one SKU rp-50 × 10 at 50).
type Spec struct {
	ID           string // default: a fresh id
	BusinessLine string // default: a fresh one with BLBudget
	BLBudget     int64
	Start, End   time.Duration // relative to now
	PerUser      int64
	Budget       int64
	TTL          string
	Segment      string
	Recycle      bool
	SKUs         []SKU
	// Lottery makes a lottery campaign (kind lottery) with NoPrize as its no-prize
	// weight and each SKU's Weight.
	Lottery bool
	NoPrize int64
	// Kind is the campaign's kind ("" = voucher); a points_item campaign's SKUs all
	// cost Points.
	Kind   string
	Points int64
}

// Campaign is a created (and warmed) test campaign. SKU and Value are its first SKU's;
// the claim helpers (Claim, Decide, ...) claim that one.
type Campaign struct {
	ID, BusinessLine, Segment string
	SKU                       string
	Value                     int64
	rdb                       *redis.Client
	seq                       int
}

// Campaign creates (and warms) a campaign with a fresh id: the kit's one campaign
// builder.
func (e *Env) Campaign(s Spec) *Campaign {
	e.T.Helper()
	if s.BLBudget == 0 {
		s.BLBudget = 1_000_000_000
	}
	if s.BusinessLine == "" {
		s.BusinessLine = e.BusinessLine(s.BLBudget)
	}
	if s.End == 0 {
		s.End = time.Hour
	}
	if s.Start == 0 {
		s.Start = -time.Minute
	}
	if s.PerUser == 0 {
		s.PerUser = 1
	}
	if s.Budget == 0 {
		s.Budget = 1_000_000_000
	}
	if s.TTL == "" {
		s.TTL = "72h"
	}
	if len(s.SKUs) == 0 {
		s.SKUs = []SKU{{SKU: "rp-50", Stock: 10, Value: 50}}
	}
	var skus []string
	kind := ""
	for _, k := range s.SKUs {
		extra := ""
		if s.Lottery {
			extra = fmt.Sprintf(`,"weight":%d`, k.Weight)
			if k.Webhook != "" {
				extra += fmt.Sprintf(`,"delivery":{"webhook":%q}`, k.Webhook)
			}
		}
		if s.Points != 0 {
			extra += fmt.Sprintf(`,"points":%d`, s.Points)
		}
		skus = append(skus, fmt.Sprintf(`{"sku":%q,"stock":%d,"value":%d%s}`, k.SKU, k.Stock, k.Value, extra))
	}
	if s.Lottery {
		kind = fmt.Sprintf(`"kind":"lottery","no_prize_weight":%d,`, s.NoPrize)
	} else if s.Kind != "" {
		kind = fmt.Sprintf(`"kind":%q,`, s.Kind)
	}
	seg := "null"
	if s.Segment != "" {
		seg = strconv.Quote(s.Segment)
	}
	id := s.ID
	if id == "" {
		id = ID(e.T, "cmp")
	}
	now := time.Now()
	body := fmt.Sprintf(`{`+kind+`"name":"test campaign","business_line":%q,"starts_at":%q,"ends_at":%q,
		"per_user_limit":%d,"budget":%d,"voucher_ttl":%q,"segment":%s,"recycle_stock":%v,"skus":[%s]}`,
		s.BusinessLine, now.Add(s.Start).UTC().Format(time.RFC3339Nano), now.Add(s.End).UTC().Format(time.RFC3339Nano),
		s.PerUser, s.Budget, s.TTL, seg, s.Recycle, strings.Join(skus, ","))
	cp, err := catalog.DecodeCampaign(id, []byte(body))
	if err != nil {
		e.T.Fatalf("campaign spec: %v", err)
	}
	if err := e.Cat.PutCampaign(Ctx(e.T, 20*time.Second), cp); err != nil {
		e.T.Fatalf("put campaign: %v", err)
	}
	return &Campaign{ID: id, BusinessLine: s.BusinessLine, Segment: s.Segment,
		SKU: s.SKUs[0].SKU, Value: s.SKUs[0].Value, rdb: e.RDB}
}

// StockCampaign is a running campaign (started a second ago, ending in an hour) of a
// business line of its own, with one SKU "rp-50" of the given stock at 50; it returns
// the campaign's id.
func (e *Env) StockCampaign(stock, perUserLimit int) string {
	e.T.Helper()
	return e.Campaign(Spec{Start: -time.Second, PerUser: int64(perUserLimit),
		SKUs: []SKU{{SKU: "rp-50", Stock: int64(stock), Value: 50}}}).ID
}

// NewCampaign is a campaign that has started (a second ago, for two hours), of a
// business line of its own, with stock for n claims of rp-50 (one per user) and the
// budget for them (the business line has ten times that).
func NewCampaign(t testing.TB, rdb *redis.Client, pg *pgxpool.Pool, n int) *Campaign {
	t.Helper()
	e := &Env{T: t, RDB: rdb, PG: pg, Cat: catalog.New(pg, rdb)}
	const value = 50
	return e.Campaign(Spec{Start: -time.Second, End: 2 * time.Hour, Budget: int64(n) * value,
		BLBudget: int64(n) * value * 10, SKUs: []SKU{{SKU: "rp-50", Stock: int64(n), Value: value}}})
}

// SettlerEnv is the environment that confines a settler binary to this campaign, so a
// test's settler leaves other tests' campaigns on the shared stack alone: Redis-loss
// recovery to its business line (FLASH_RECOVERY_BUSINESS_LINES), expiry and
// reconciliation to the campaign (FLASH_SETTLER_CAMPAIGNS). The outbox relay has no such
// option (it passes over every warmed campaign): a test that must keep it away takes its
// campaign out of the live set, as settler/relay's tests do.
func (c *Campaign) SettlerEnv() []string {
	return []string{"FLASH_RECOVERY_BUSINESS_LINES=" + c.BusinessLine, "FLASH_SETTLER_CAMPAIGNS=" + c.ID}
}

// DurableCampaign is NewCampaign with its n claims decided by claim.lua and marked
// durable, as a gateway leaves them once the broker has acknowledged them.
func DurableCampaign(t testing.TB, rdb *redis.Client, pg *pgxpool.Pool, n int) (*Campaign, []claim.Record) {
	t.Helper()
	c := NewCampaign(t, rdb, pg, n)
	recs := c.Claim(t, n)
	c.MarkDurable(t, recs)
	return c, recs
}
