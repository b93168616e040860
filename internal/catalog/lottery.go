package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/flashgate/flashgate/internal/odds"
)

// The lottery fields of the campaign PUT (CONTRACT.md "Redemption kinds"; issue 17;
// migration 0013; DESIGN.md "Lottery"): a lottery campaign's SKUs are prizes with a
// weight, and the campaign has a no_prize_weight. A SKU of a lottery may carry
// delivery: {"webhook": URL}, stored in campaign_skus.delivery_webhook (internal/delivery
// fulfils it after settlement). The odds (the weights) are frozen once the campaign has
// started; a webhook may change at any time (it is where prizes go, not what they are).

// KindLottery is a campaign whose claims are draws.
const KindLottery = "lottery"

// Delivery is a prize's fulfilment (CONTRACT.md "delivery").
type Delivery struct {
	Webhook string `json:"webhook"`
}

// MaxWebhookLen bounds a webhook URL (the column's CHECK).
const MaxWebhookLen = 2048

// validateLottery checks the fields that belong to the lottery kind, and that no other
// kind carries them.
func (c *Campaign) validateLottery() error {
	if c.Kind != KindLottery {
		if c.NoPrizeWeight != nil {
			return fieldErr("no_prize_weight", "only a lottery campaign has a no-prize weight (kind is %s)", c.Kind)
		}
		for i, s := range c.SKUs {
			f := "skus[" + strconv.Itoa(i) + "]"
			if s.Weight != nil {
				return fieldErr(f+".weight", "only a lottery campaign's SKUs have a weight (kind is %s)", c.Kind)
			}
			if s.Delivery != nil {
				return fieldErr(f+".delivery", "only a lottery campaign's prizes are delivered (kind is %s)", c.Kind)
			}
		}
		return nil
	}
	if c.NoPrizeWeight == nil {
		return fieldErr("no_prize_weight", "required for a lottery (0 when every draw wins)")
	}
	for i, s := range c.SKUs {
		f := "skus[" + strconv.Itoa(i) + "]"
		switch {
		case s.Weight == nil:
			return fieldErr(f+".weight", "required for a lottery prize")
		case *s.Weight < 0:
			return fieldErr(f+".weight", "%d is negative", *s.Weight)
		case s.Stock < 1:
			return fieldErr(f+".stock", "a prize needs stock (at least 1)")
		}
		if s.Delivery != nil {
			if err := validWebhook(s.Delivery.Webhook); err != nil {
				return fieldErr(f+".delivery.webhook", "%v", err)
			}
		}
	}
	if err := c.Odds().Validate(); err != nil {
		field, msg, _ := strings.Cut(err.Error(), ": ")
		return fieldErr(field, "%s", msg)
	}
	return nil
}

// validWebhook accepts an absolute http(s) URL with a host, no credentials and no
// fragment, at most MaxWebhookLen bytes.
func validWebhook(s string) error {
	if s == "" || len(s) > MaxWebhookLen {
		return fmt.Errorf("must be an http(s) URL of 1..%d characters", MaxWebhookLen)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("not a URL: %v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an http:// or https:// URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("must name a host")
	case u.User != nil:
		return errors.New("must not carry credentials (user:password@)")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return errors.New("must not have a #fragment")
	case strings.ContainsAny(s, " \t\r\n"):
		return errors.New("must not contain whitespace")
	}
	return nil
}

// Odds is the campaign's configured table (every prize in stock), in SKU order.
func (c *Campaign) Odds() odds.Table {
	t := odds.Table{Prizes: make([]odds.Prize, len(c.SKUs))}
	if c.NoPrizeWeight != nil {
		t.NoPrize = *c.NoPrizeWeight
	}
	for i, s := range c.SKUs {
		var w int64
		if s.Weight != nil {
			w = *s.Weight
		}
		t.Prizes[i] = odds.Prize{SKU: s.SKU, Weight: w, InStock: true}
	}
	return t
}

// OddsField is the Redis form of a lottery's odds, the meta field "odds" that claim.lua
// draws by and the gateway's route reads (DESIGN.md "Lottery"):
//
//	<version>\t<no-prize weight>\t<sku 1>\t<weight 1>\t...\t<sku n>\t<weight n>
//
// version is the first 16 hex digits of the SHA-256 of the rest: it names the odds a
// draw was made under, and a gateway whose cached odds disagree with Redis's is told
// STALE. "" for a campaign that is not a lottery.
func (c *Campaign) OddsField() string {
	if c.kind() != KindLottery {
		return ""
	}
	t := c.Odds()
	var b strings.Builder
	b.WriteString(strconv.FormatInt(t.NoPrize, 10))
	for _, p := range t.Prizes {
		b.WriteByte('\t')
		b.WriteString(p.SKU)
		b.WriteByte('\t')
		b.WriteString(strconv.FormatInt(p.Weight, 10))
	}
	rest := b.String()
	sum := sha256.Sum256([]byte(rest))
	return hex.EncodeToString(sum[:8]) + "\t" + rest
}

// OddsVersion is the version part of OddsField ("" when not a lottery).
func (c *Campaign) OddsVersion() string {
	v, _, _ := strings.Cut(c.OddsField(), "\t")
	return v
}

// storeLottery writes the lottery columns (campaigns.no_prize_weight, odds_version;
// campaign_skus.weight, delivery_webhook) after the SKU rows, and returns the first
// odds field that differs from what was stored (prevVersion; "" for a new campaign),
// which the warm refuses once the campaign has started.
func storeLottery(ctx context.Context, tx pgx.Tx, cp *Campaign, prev *stored) (string, error) {
	ver := cp.OddsVersion()
	var nv *string
	if ver != "" {
		nv = &ver
	}
	if _, err := tx.Exec(ctx, `UPDATE campaigns SET no_prize_weight = $2, odds_version = $3 WHERE id = $1`,
		cp.ID, cp.NoPrizeWeight, nv); err != nil {
		return "", fmt.Errorf("put campaign %s odds: %w", cp.ID, err)
	}
	frozen := ""
	if prev != nil && prev.oddsVersion != ver {
		frozen = "no_prize_weight"
		if cp.NoPrizeWeight != nil && prev.noPrize != nil && *prev.noPrize == *cp.NoPrizeWeight {
			frozen = "skus" // the same weights in another order: another walk
			for i, s := range cp.SKUs {
				if w, ok := prev.skuWeight[s.SKU]; !ok || w == nil || s.Weight == nil || *w != *s.Weight {
					frozen = "skus[" + strconv.Itoa(i) + "].weight"
					break
				}
			}
		}
	}
	return frozen, nil
}
