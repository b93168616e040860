package setup

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
)

// --lottery's syntax and the model's checks: each bad input is an error naming the flag
// and the prize, before anything is sent.
func TestLotteryFlagsRefused(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"iphone:5:1000", "is not sku:stock:value:weight"},
		{"iphone:5:1000:1:x", "is not sku:stock:value:weight"},
		{"iphone:5:1000:-1", `lottery: "iphone": weight -1 is negative`},
		{"iphone:0:1000:1", `lottery: "iphone": stock 0: a prize needs stock`},
		{"iphone::1000:1", `lottery: "iphone": stock "" is not a whole number`},
		{"iphone:5:0:1", `lottery: "iphone": value "0" is not a whole number > 0`},
		{"iphone:5:10:x", `lottery: "iphone": weight "x" is not a whole number`},
		{"iphone:5:10:1,iphone:1:1:1", `lottery: "iphone" appears twice`},
		{"bad sku:5:10:1", "the sku must be"},
		{"iphone:5:10:1099511627777", "is above 1099511627776"},
		{" , ", "at least one sku:stock:value:weight"},
	} {
		if _, err := ParsePrizes(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePrizes(%q): %v; want an error with %q", tc.in, err, tc.want)
		}
	}
	prizes, err := ParsePrizes("iphone:5:1000:1, credit:2000:10:9999")
	if err != nil || len(prizes) != 2 || prizes[1].SKU != "credit" || prizes[1].Stock != 2000 || prizes[1].Value != 10 || *prizes[1].Weight != 9999 {
		t.Fatalf("ParsePrizes: %+v %v", prizes, err)
	}
	zero, _ := ParsePrizes("a:1:1:0,b:1:1:0")
	base := func(l Lottery) Config {
		return Config{Admin: "http://127.0.0.1:8081", Campaign: "c", BusinessLine: "b", PerUserLimit: 1,
			Duration: time.Minute, VoucherTTL: time.Hour, Lottery: l}
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{base(Lottery{Prizes: zero, NoPrize: 0}), "sum to 0"},
		{base(Lottery{Prizes: prizes, NoPrize: -3}), "no-prize-weight -3: must not be negative"},
		{base(Lottery{Prizes: prizes, NoPrize: 1 << 40}), "sum above"},
		{base(Lottery{Prizes: []SKU{{SKU: "p", Stock: 0, Value: 1, Weight: new(int64)}}, NoPrize: 1}), `lottery: "p": stock 0`},
		{base(Lottery{Prizes: []SKU{{SKU: "p", Stock: 1, Value: 1}}, NoPrize: 1}), `lottery: "p" has no weight`},
		{base(Lottery{Prizes: prizes, NoPrize: 1, DeliveryURL: "ftp://x/y"}), `delivery-url "ftp://x/y"`},
		{base(Lottery{Prizes: prizes, NoPrize: 1, DeliveryURL: "http://u:p@x/y"}), "credentials"},
		{base(Lottery{Prizes: prizes, NoPrize: 1, DeliveryURL: "http://x/y#z"}), "fragment"},
		{base(Lottery{Prizes: prizes, NoPrize: 1, DeliveryURL: "http://x/y", Delivered: []string{"tv"}}), `delivery-skus: "tv" is not one of`},
		{base(Lottery{Prizes: prizes, NoPrize: 1, Delivered: []string{"credit"}}), "delivery-skus: give --delivery-url"},
		{func() Config {
			c := base(Lottery{DeliveryURL: "http://x/y"})
			c.SKUs = []SKU{{SKU: "v", Stock: 1, Value: 1}}
			return c
		}(),
			"delivery-url: only a lottery"},
		{func() Config { c := base(Lottery{Prizes: prizes, NoPrize: 1}); c.SKUs = prizes; return c }(), "skus: a lottery's SKUs are its prizes"},
		{func() Config {
			c := base(Lottery{Prizes: prizes, NoPrize: 1})
			c.Points = Points{Price: 5, Users: 1, Public: "http://127.0.0.1:8080"}
			return c
		}(), "points-price"},
	} {
		cfg := tc.cfg
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v): %v; want an error with %q", tc.cfg.Lottery, err, tc.want)
		}
	}
}

// The lottery campaign setup sends is one the gateway's own decoder takes as a
// lottery: kind, no_prize_weight, each prize's weight, and the webhook only on the
// prizes named for delivery.
func TestLotterySetupSendsWhatTheCatalogAccepts(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = string(b)
		mu.Unlock()
	}))
	defer srv.Close()
	prizes, err := ParsePrizes("iphone:5:1000:1,credit:2000:10:9999")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	made, err := Run(ctx, Config{Admin: srv.URL, Campaign: "wheel", BusinessLine: "bl", PerUserLimit: 1, StartsIn: time.Second,
		Duration: time.Minute, VoucherTTL: time.Hour, Lottery: Lottery{Prizes: prizes, NoPrize: 90000,
			DeliveryURL: "http://127.0.0.1:9099/prizes", Delivered: []string{"credit"}}})
	if err != nil {
		t.Fatal(err)
	}
	if made.Body.Budget != 5*1000+2000*10 {
		t.Errorf("default budget %d, want the prizes' face value %d", made.Body.Budget, 5*1000+2000*10)
	}
	cp, err := catalog.DecodeCampaign("wheel", []byte(got["/admin/v1/campaigns/wheel"]))
	if err != nil {
		t.Fatalf("the catalog refuses setup's lottery body: %v\n%s", err, got["/admin/v1/campaigns/wheel"])
	}
	if cp.Kind != catalog.KindLottery || cp.NoPrizeWeight == nil || *cp.NoPrizeWeight != 90000 || len(cp.SKUs) != 2 {
		t.Fatalf("decoded %+v", cp)
	}
	if s := cp.SKUs[0]; s.SKU != "iphone" || *s.Weight != 1 || s.Delivery != nil {
		t.Errorf("iphone decoded as %+v", s)
	}
	if s := cp.SKUs[1]; s.SKU != "credit" || *s.Weight != 9999 || s.Delivery == nil || s.Delivery.Webhook != "http://127.0.0.1:9099/prizes" {
		t.Errorf("credit decoded as %+v", s)
	}
	var b strings.Builder
	made.Print(&b)
	for _, want := range []string{"no-prize weight 90000 of 100000 (90.0000%)", "sku iphone: stock 5 × value 1000, weight 1\n",
		"sku credit: stock 2000 × value 10, weight 9999, delivered to http://127.0.0.1:9099/prizes"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("setup's output lacks %q:\n%s", want, b.String())
		}
	}
}
