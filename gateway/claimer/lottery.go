package claimer

// Lottery draws (DESIGN.md "Lottery"): the gateway's half. A lottery campaign's route
// carries its odds as warmed into the meta (internal/catalog OddsField); each fresh
// decision draws a uniform integer r in [0, total weight) with crypto/rand - never from
// anything the client sends, so no client can predict or steer it - and passes r, the
// odds version and the prize r points at (the SKU key the script may take from) to
// claim.lua, which walks the same odds, checks they agree (STALE when this route's odds
// are behind Redis's) and decides stock and budget atomically. A retry of a request_id
// is replayed by the script from its record: the new r of a retry is never used.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/odds"
)

// lotteryOdds is a lottery route's odds.
type lotteryOdds struct {
	version string
	table   odds.Table // every prize InStock: the pick before stock (the script decides stock)
	total   int64
}

// parseOdds reads the meta's odds field ("" or malformed: nil).
func parseOdds(s string) *lotteryOdds {
	f := strings.Split(s, "\t")
	if len(f) < 2 || len(f)%2 != 0 || f[0] == "" {
		return nil
	}
	w0, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || w0 < 0 {
		return nil
	}
	o := &lotteryOdds{version: f[0], table: odds.Table{NoPrize: w0}}
	for j := 2; j < len(f); j += 2 {
		w, err := strconv.ParseInt(f[j+1], 10, 64)
		if err != nil || w < 0 {
			return nil
		}
		o.table.Prizes = append(o.table.Prizes, odds.Prize{SKU: f[j], Weight: w, InStock: true})
	}
	o.total = o.table.Total()
	if o.total <= 0 || o.total > odds.MaxTotal {
		return nil
	}
	return o
}

// uniform returns a uniform integer in [0, n) from crypto/rand (n > 0), without modulo
// bias: draws at or above the largest multiple of n below 2^64 are thrown away (at most
// n/2^64 of them: with n <= 2^40, about one in 16 million).
func uniform(n int64) (int64, error) {
	var b [8]byte
	un := uint64(n)
	limit := ^uint64(0) - ^uint64(0)%un
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if x := binary.LittleEndian.Uint64(b[:]); x < limit {
			return int64(x % un), nil
		}
	}
}

// draw fills r's lottery inputs for a fresh decision: a new random number, its pick
// as the claim's SKU and the Draw argument.
func (o *lotteryOdds) draw(r *Request) error {
	v, err := uniform(o.total)
	if err != nil {
		return err
	}
	r.DrawR = v
	r.DrawVersion = o.version
	r.SKU = ""
	if i := o.table.Pick(v); i > 0 {
		r.SKU = o.table.Prizes[i-1].SKU
	}
	r.DrawPick = r.SKU
	r.drawArg = string(claim.AppendDrawArg(make([]byte, 0, 40), o.version, v))
	return nil
}

// OddsInForce is a lottery's public odds (GET /v1/campaigns/{id}/odds): the configured
// weights and the probabilities a draw faces now, after a prize out of stock passed its
// weight to no-prize (internal/odds Probabilities).
type OddsInForce struct {
	CampaignID  string      `json:"campaign_id"`
	OddsVersion string      `json:"odds_version"`
	TotalWeight int64       `json:"total_weight"`
	NoPrize     OddsNoPrize `json:"no_prize"`
	Prizes      []OddsPrize `json:"prizes"`
}

// OddsNoPrize is the no-prize band: its configured weight and its probability now.
type OddsNoPrize struct {
	Weight      int64   `json:"weight"`
	Probability float64 `json:"probability"`
}

// OddsPrize is one prize's configured weight, whether it is in stock, and its
// probability now.
type OddsPrize struct {
	SKU         string  `json:"sku"`
	Weight      int64   `json:"weight"`
	InStock     bool    `json:"in_stock"`
	Probability float64 `json:"probability"`
}

// ErrNotLottery: the campaign exists but is not a lottery.
var ErrNotLottery = errors.New("claimer: not a lottery campaign")

// Odds reads a lottery's odds in force: the route's odds and each prize's stock (one
// pipeline of HGETs, all in the campaign's slot). nil, nil for an unknown campaign.
func (c *Claimer) Odds(ctx context.Context, campaign string) (*OddsInForce, error) {
	rt, err := c.routes.get(ctx, campaign, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: route campaign: %v", ErrUnavailable, err)
	}
	if rt == nil {
		return nil, nil
	}
	if rt.lottery == nil {
		return nil, ErrNotLottery
	}
	t := rt.lottery.table
	t.Prizes = append([]odds.Prize(nil), t.Prizes...)
	pipe := c.rdb.Pipeline()
	stocks := make([]*redis.StringCmd, len(t.Prizes))
	for i, p := range t.Prizes {
		stocks[i] = pipe.HGet(ctx, rt.skuKey(p.SKU), "stock")
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("%w: prize stock: %v", ErrUnavailable, err)
	}
	for i := range t.Prizes {
		n, _ := strconv.ParseInt(stocks[i].Val(), 10, 64)
		t.Prizes[i].InStock = n > 0
	}
	probs := t.Probabilities()
	out := &OddsInForce{CampaignID: rt.campaign, OddsVersion: rt.lottery.version, TotalWeight: t.Total(),
		NoPrize: OddsNoPrize{Weight: t.NoPrize, Probability: probs[0]}, Prizes: make([]OddsPrize, len(t.Prizes))}
	for i, p := range t.Prizes {
		out.Prizes[i] = OddsPrize{SKU: p.SKU, Weight: p.Weight, InStock: p.InStock, Probability: probs[1+i]}
	}
	return out, nil
}
