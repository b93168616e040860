package catalog_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

func lotteryBody(bl string, starts, ends time.Time, extra, skus string) []byte {
	b := string(campaignBody(bl, starts, ends, 1_000_000, skus))
	return []byte(strings.Replace(b, `{"name"`, `{"kind":"lottery",`+extra+`"name"`, 1))
}

// Issue 17 step 1: a lottery's fields are checked against the kind and each other, 400
// naming the field.
func TestLotteryFieldsRefused(t *testing.T) {
	starts, ends := time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)
	ok := `[{"sku":"phone","stock":5,"value":5000,"weight":1}]`
	for _, tc := range []struct{ name, extra, skus, field string }{
		{"negative weight", `"no_prize_weight":999,`, `[{"sku":"phone","stock":5,"value":5000,"weight":-1}]`, "skus[0].weight"},
		{"negative no-prize weight", `"no_prize_weight":-5,`, ok, "no_prize_weight"},
		{"weights sum to 0", `"no_prize_weight":0,`, `[{"sku":"phone","stock":5,"value":5000,"weight":0}]`, "no_prize_weight"},
		{"prize without stock", `"no_prize_weight":999,`, `[{"sku":"phone","stock":0,"value":5000,"weight":1}]`, "skus[0].stock"},
		{"prize without weight", `"no_prize_weight":999,`, `[{"sku":"phone","stock":5,"value":5000}]`, "skus[0].weight"},
		{"no no_prize_weight", ``, ok, "no_prize_weight"},
		{"webhook not http", `"no_prize_weight":9,`, `[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"webhook":"ftp://x/y"}}]`, "skus[0].delivery.webhook"},
		{"webhook with credentials", `"no_prize_weight":9,`, `[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"webhook":"https://u:p@x/y"}}]`, "skus[0].delivery.webhook"},
		{"webhook without host", `"no_prize_weight":9,`, `[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"webhook":"https:///y"}}]`, "skus[0].delivery.webhook"},
		{"webhook empty", `"no_prize_weight":9,`, `[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"webhook":""}}]`, "skus[0].delivery.webhook"},
		{"webhook unknown field", `"no_prize_weight":9,`, `[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"url":"https://x/"}}]`, "url"},
		{"weights too large", `"no_prize_weight":1099511627776,`, ok, "no_prize_weight"},
	} {
		_, err := catalog.DecodeCampaign("c1", lotteryBody("bl", starts, ends, tc.extra, tc.skus))
		var fe *catalog.FieldError
		if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, tc.field) {
			t.Errorf("%s: %v, want a FieldError naming %s", tc.name, err, tc.field)
		}
	}
	// Fields that do not fit the kind.
	for _, tc := range []struct{ kind, extra, skus, field string }{
		{"voucher", `"no_prize_weight":5,`, `[{"sku":"a","stock":1,"value":1}]`, "no_prize_weight"},
		{"", ``, `[{"sku":"a","stock":1,"value":1,"weight":3}]`, "skus[0].weight"},
		{"voucher", ``, `[{"sku":"a","stock":1,"value":1,"delivery":{"webhook":"https://x/"}}]`, "skus[0].delivery"},
	} {
		b := string(campaignBody("bl", starts, ends, 10, tc.skus))
		k := ""
		if tc.kind != "" {
			k = `"kind":"` + tc.kind + `",`
		}
		b = strings.Replace(b, `{"name"`, `{`+k+tc.extra+`"name"`, 1)
		_, err := catalog.DecodeCampaign("c1", []byte(b))
		var fe *catalog.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("kind %q %s %s: %v, want a FieldError naming %s", tc.kind, tc.extra, tc.skus, err, tc.field)
		}
	}
	cp, err := catalog.DecodeCampaign("c1", lotteryBody("bl", starts, ends, `"no_prize_weight":999,`,
		`[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"webhook":"https://ful.example/prizes?x=1"}}]`))
	if err != nil {
		t.Fatalf("a good lottery: %v", err)
	}
	if p := cp.Odds().Probabilities(); p[0] != 0.999 || p[1] != 0.001 {
		t.Fatalf("odds %v, want [0.999 0.001]", p)
	}
}

// A lottery is stored (weights, webhook, odds version) and warmed (the odds in the meta
// hash, campaign slot), its odds may change before the start and are frozen after it,
// while stock and webhook may still change.
func TestLotteryStoredWarmedFrozen(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	bl := e.BusinessLine(10_000_000)
	id := testenv.ID(t, "lot")
	starts, ends := time.Now().Add(time.Hour).Truncate(time.Millisecond), time.Now().Add(2*time.Hour).Truncate(time.Millisecond)
	skus := `[{"sku":"phone","stock":5,"value":5000,"weight":1,"delivery":{"webhook":"http://127.0.0.1:1/x"}},{"sku":"credit","stock":100,"value":10,"weight":99}]`
	if err := put(t, e.Cat, id, lotteryBody(bl, starts, ends, `"no_prize_weight":900,`, skus)); err != nil {
		t.Fatal(err)
	}
	var kind, ver string
	var w0, w int64
	var hook *string
	if err := e.PG.QueryRow(ctx, `SELECT c.kind, c.no_prize_weight, c.odds_version, s.weight, s.delivery_webhook
		FROM campaigns c JOIN campaign_skus s ON s.campaign_id = c.id WHERE c.id = $1 AND s.sku = 'phone'`, id).
		Scan(&kind, &w0, &ver, &w, &hook); err != nil {
		t.Fatal(err)
	}
	if kind != "lottery" || w0 != 900 || w != 1 || hook == nil || *hook != "http://127.0.0.1:1/x" || len(ver) != 16 {
		t.Fatalf("stored kind %q w0 %d weight %d hook %v version %q", kind, w0, w, hook, ver)
	}
	m, err := e.RDB.HMGet(ctx, rkeys.Meta(id), "kind", "odds").Result()
	if err != nil {
		t.Fatal(err)
	}
	if m[0] != "lottery" || m[1] != ver+"\t900\tphone\t1\tcredit\t99" {
		t.Fatalf("warmed meta kind %v odds %q, want lottery and %q", m[0], m[1], ver+"\t900\tphone\t1\tcredit\t99")
	}
	// Before the start the odds may change (a new version).
	if err := put(t, e.Cat, id, lotteryBody(bl, starts, ends, `"no_prize_weight":800,`, skus)); err != nil {
		t.Fatalf("odds change before the start: %v", err)
	}
	var ver2 string
	e.PG.QueryRow(ctx, `SELECT odds_version FROM campaigns WHERE id = $1`, id).Scan(&ver2)
	if ver2 == ver {
		t.Fatal("odds changed but the version did not")
	}

	// Started: weights are frozen; stock and the webhook are not.
	id2 := testenv.ID(t, "lot")
	started := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	if err := put(t, e.Cat, id2, lotteryBody(bl, started, ends, `"no_prize_weight":900,`, skus)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ field, extra, skus string }{
		{"no_prize_weight", `"no_prize_weight":901,`, skus},
		{"skus[1].weight", `"no_prize_weight":900,`, strings.Replace(skus, `"weight":99`, `"weight":98`, 1)},
	} {
		err := put(t, e.Cat, id2, lotteryBody(bl, started, ends, tc.extra, tc.skus))
		var se *catalog.StartedError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("change of %s after the start: %v, want a StartedError naming it", tc.field, err)
		}
	}
	moved := strings.Replace(strings.Replace(skus, `"stock":5,`, `"stock":7,`, 1), "127.0.0.1:1/x", "127.0.0.1:2/y", 1)
	if err := put(t, e.Cat, id2, lotteryBody(bl, started, ends, `"no_prize_weight":900,`, moved)); err != nil {
		t.Fatalf("stock and webhook change after the start: %v", err)
	}
	if err := e.PG.QueryRow(ctx, `SELECT delivery_webhook FROM campaign_skus WHERE campaign_id = $1 AND sku = 'phone'`, id2).Scan(&hook); err != nil || *hook != "http://127.0.0.1:2/y" {
		t.Fatalf("webhook after the change: %v %v", hook, err)
	}
}
