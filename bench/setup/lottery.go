package setup

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/flashgate/flashgate/bench/traffic"
)

// The lottery traffic model (issue 17; DESIGN.md "Lottery"): the campaign is kind
// lottery, its SKUs are prizes with a weight beside stock and value, the campaign has a
// no-prize weight, and prizes may be delivered through a webhook. `bench run` then
// draws (every 200 is a draw: won with a claim_id, or no_prize with a draw_id) and
// `bench verify` checks the draws, the prizes and the odds.

// MaxTotalWeight is the largest sum of weights a lottery takes (odds.Validate: exact
// in Lua's doubles).
const MaxTotalWeight = 1 << 40

// Lottery configures the model (Prizes empty: off).
type Lottery struct {
	// Prizes are the lottery's SKUs, each with a Weight.
	Prizes []SKU
	// NoPrize is the no-prize band's weight.
	NoPrize int64
	// DeliveryURL, if set, is the webhook of the prizes named in Delivered (all of
	// them when Delivered is empty).
	DeliveryURL string
	Delivered   []string
}

// ParsePrizes reads "iphone:5:1000:1,credit:2000:10:9999" (sku:stock:value:weight,
// ...), the --lottery flag. Errors name the flag.
func ParsePrizes(s string) ([]SKU, error) {
	var out []SKU
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		f := strings.Split(part, ":")
		if len(f) != 4 {
			return nil, fmt.Errorf("lottery: %q is not sku:stock:value:weight (like iphone:5:1000:1)", part)
		}
		stock, err1 := strconv.ParseInt(f[1], 10, 64)
		value, err2 := strconv.ParseInt(f[2], 10, 64)
		weight, err3 := strconv.ParseInt(f[3], 10, 64)
		switch {
		case !traffic.ValidID(f[0]):
			return nil, fmt.Errorf("lottery: %q: the sku must be 1-64 characters of [A-Za-z0-9._:-]", f[0])
		case seen[f[0]]:
			return nil, fmt.Errorf("lottery: %q appears twice", f[0])
		case err1 != nil:
			return nil, fmt.Errorf("lottery: %q: stock %q is not a whole number", f[0], f[1])
		case stock < 1:
			return nil, fmt.Errorf("lottery: %q: stock %d: a prize needs stock (at least 1)", f[0], stock)
		case err2 != nil || value <= 0:
			return nil, fmt.Errorf("lottery: %q: value %q is not a whole number > 0", f[0], f[2])
		case err3 != nil:
			return nil, fmt.Errorf("lottery: %q: weight %q is not a whole number", f[0], f[3])
		case weight < 0:
			return nil, fmt.Errorf("lottery: %q: weight %d is negative", f[0], weight)
		case weight > MaxTotalWeight:
			return nil, fmt.Errorf("lottery: %q: weight %d is above %d", f[0], weight, int64(MaxTotalWeight))
		}
		seen[f[0]] = true
		w := weight
		out = append(out, SKU{SKU: f[0], Stock: stock, Value: value, Weight: &w})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("lottery: at least one sku:stock:value:weight is required")
	}
	return out, nil
}

// on reports whether the model is in use.
func (l *Lottery) on() bool { return len(l.Prizes) > 0 }

func (l *Lottery) validate() error {
	if !l.on() {
		switch {
		case l.DeliveryURL != "":
			return fmt.Errorf("delivery-url: only a lottery's prizes are delivered (give --lottery)")
		case len(l.Delivered) > 0:
			return fmt.Errorf("delivery-skus: only a lottery's prizes are delivered (give --lottery)")
		}
		return nil
	}
	if l.NoPrize < 0 {
		return fmt.Errorf("no-prize-weight %d: must not be negative", l.NoPrize)
	}
	total := l.NoPrize
	names := map[string]bool{}
	for _, p := range l.Prizes {
		switch {
		case p.Weight == nil:
			return fmt.Errorf("lottery: %q has no weight", p.SKU)
		case *p.Weight < 0:
			return fmt.Errorf("lottery: %q: weight %d is negative", p.SKU, *p.Weight)
		case p.Stock < 1:
			return fmt.Errorf("lottery: %q: stock %d: a prize needs stock (at least 1)", p.SKU, p.Stock)
		}
		names[p.SKU] = true
		total += *p.Weight
		if total > MaxTotalWeight {
			return fmt.Errorf("lottery: the weights (with --no-prize-weight) sum above %d", int64(MaxTotalWeight))
		}
	}
	if total == 0 {
		return fmt.Errorf("lottery: the prizes' weights and --no-prize-weight sum to 0: a draw could pick nothing")
	}
	if l.DeliveryURL != "" {
		u, err := url.Parse(l.DeliveryURL)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
			return fmt.Errorf("delivery-url %q: want an http(s) URL with a host, like http://127.0.0.1:9099/prizes", l.DeliveryURL)
		case u.User != nil:
			return fmt.Errorf("delivery-url %q: must not carry credentials (user:password@)", l.DeliveryURL)
		case u.Fragment != "" || strings.Contains(l.DeliveryURL, "#"):
			return fmt.Errorf("delivery-url %q: must not have a #fragment", l.DeliveryURL)
		}
	} else if len(l.Delivered) > 0 {
		return fmt.Errorf("delivery-skus: give --delivery-url, where those prizes are delivered")
	}
	for _, s := range l.Delivered {
		if !names[s] {
			return fmt.Errorf("delivery-skus: %q is not one of --lottery's prizes", s)
		}
	}
	return nil
}

// apply makes the campaign body a lottery's.
func (l *Lottery) apply(body *Campaign) {
	body.Kind = "lottery"
	np := l.NoPrize
	body.NoPrizeWeight = &np
	if l.DeliveryURL == "" {
		return
	}
	for i := range body.SKUs {
		deliver := len(l.Delivered) == 0
		for _, s := range l.Delivered {
			deliver = deliver || s == body.SKUs[i].SKU
		}
		if deliver {
			body.SKUs[i].Delivery = &Delivery{Webhook: l.DeliveryURL}
		}
	}
}
