package catalog_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

func campaignBody(bl string, starts, ends time.Time, budget int64, skus string) []byte {
	return []byte(fmt.Sprintf(`{"name":"warm test","business_line":%q,"starts_at":%q,"ends_at":%q,
		"per_user_limit":1,"budget":%d,"voucher_ttl":"72h","segment":null,"skus":%s}`,
		bl, starts.UTC().Format(time.RFC3339Nano), ends.UTC().Format(time.RFC3339Nano), budget, skus))
}

func put(t *testing.T, cat *catalog.Catalog, id string, body []byte) error {
	t.Helper()
	cp, err := catalog.DecodeCampaign(id, body)
	if err != nil {
		t.Fatal(err)
	}
	return cat.PutCampaign(testenv.Ctx(t, 10*time.Second), cp)
}

// Issue 21.1: the same campaign body PUT again and again around its opening while
// claims hammer it never lets the accepted claims exceed the stock (or the budget).
// Checked from Redis (taken, stock left, spent) and from Postgres (the settled rows).
func TestRePutAroundOpeningNeverOversells(t *testing.T) {
	for _, tc := range []struct {
		name          string
		stock, budget int64
		limit         int64 // what binds: accepted claims at most this
	}{
		{"stock binds", 40, 1_000_000, 40},
		{"budget binds", 1000, 400, 40}, // value 10: 40 claims
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			ctx := testenv.Ctx(t, 60*time.Second)
			bl := e.BusinessLine(1_000_000_000)
			id := testenv.ID(t, "cmp")
			opens := time.Now().Add(1200 * time.Millisecond).Truncate(time.Millisecond)
			ends := opens.Add(time.Hour)
			skus := `[{"sku":"rp-10","stock":` + strconv.FormatInt(tc.stock, 10) + `,"value":10}]`
			body := campaignBody(bl, opens, ends, tc.budget, skus)
			if err := put(t, e.Cat, id, body); err != nil {
				t.Fatal(err)
			}

			stop := make(chan struct{})
			var accepted, puts, refused atomic.Int64
			var wg sync.WaitGroup
			for w := 0; w < 6; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						u := fmt.Sprintf("u-%d-%d", w, i)
						a, err := testenv.ScriptClaim(ctx, e.RDB, id, "rp-10", u, "rq-"+u)
						if err != nil {
							t.Error(err)
							return
						}
						if a.Code == claim.CodeAccepted {
							accepted.Add(1)
						}
					}
				}(w)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(opens.Add(600 * time.Millisecond)) {
					err := put(t, e.Cat, id, body)
					switch {
					case err == nil:
						puts.Add(1)
					case errors.Is(err, catalog.ErrStarted):
						refused.Add(1)
					default:
						t.Errorf("re-PUT of the same body: %v", err)
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			}()
			time.Sleep(time.Until(opens.Add(900 * time.Millisecond)))
			close(stop)
			wg.Wait()
			if refused.Load() != 0 {
				t.Errorf("%d re-PUTs of the unchanged body refused; the same body is allowed at any time", refused.Load())
			}
			t.Logf("accepted %d, re-PUTs answered 200: %d", accepted.Load(), puts.Load())
			if accepted.Load() > tc.limit {
				t.Fatalf("accepted %d claims; at most %d may be (stock %d, budget %d)", accepted.Load(), tc.limit, tc.stock, tc.budget)
			}
			if accepted.Load() != tc.limit {
				t.Fatalf("accepted %d claims, want exactly %d: the sale should sell out in 900 ms", accepted.Load(), tc.limit)
			}
			sku := e.RDB.HMGet(ctx, rkeys.SKU(id, "rp-10"), "stock", "taken", "total").Val()
			meta := e.RDB.HMGet(ctx, rkeys.Meta(id), "spent", "taken").Val()
			wantSKU := fmt.Sprintf("[%d %d %d]", tc.stock-tc.limit, tc.limit, tc.stock)
			if got := fmt.Sprint(sku); got != wantSKU {
				t.Errorf("SKU stock/taken/total %s, want %s", got, wantSKU)
			}
			if got := fmt.Sprint(meta); got != fmt.Sprintf("[%d %d]", 10*tc.limit, tc.limit) {
				t.Errorf("campaign spent/taken %s, want [%d %d]", got, 10*tc.limit, tc.limit)
			}
			if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, id); err != nil {
				t.Fatal(err)
			}
			var rows, value int64
			if err := e.PG.QueryRow(ctx, `SELECT count(*), coalesce(sum(value), 0) FROM claims WHERE campaign_id = $1`, id).Scan(&rows, &value); err != nil {
				t.Fatal(err)
			}
			if rows != tc.limit || value > tc.budget || rows > tc.stock {
				t.Fatalf("Postgres: %d rows worth %d; want %d rows, within stock %d and budget %d", rows, value, tc.limit, tc.stock, tc.budget)
			}
		})
	}
}

// After the start (by the Redis clock) only name, ends_at, paused, budget and stock may
// change; anything else is refused naming the field, and nothing changes. A stock may
// be raised (the units given out stay given out) but not lowered below them.
func TestChangesAfterTheStart(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	bl := e.BusinessLine(1_000_000_000)
	id := testenv.ID(t, "cmp")
	starts, ends := time.Now().Add(-time.Minute).Truncate(time.Millisecond), time.Now().Add(time.Hour).Truncate(time.Millisecond)
	skus := `[{"sku":"rp-10","stock":5,"value":10}]`
	if err := put(t, e.Cat, id, campaignBody(bl, starts, ends, 1000, skus)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if a, err := testenv.ScriptClaim(ctx, e.RDB, id, "rp-10", fmt.Sprint("u", i), fmt.Sprint("rq", i)); err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %+v %v", i, a, err)
		}
	}
	before := fmt.Sprint(e.RDB.HGetAll(ctx, rkeys.Meta(id)).Val(), e.RDB.HGetAll(ctx, rkeys.SKU(id, "rp-10")).Val())
	other := e.BusinessLine(1000)
	for _, tc := range []struct{ field, body string }{
		{"starts_at", string(campaignBody(bl, starts.Add(time.Second), ends, 1000, skus))},
		{"business_line", string(campaignBody(other, starts, ends, 1000, skus))},
		{"skus[0].value", string(campaignBody(bl, starts, ends, 1000, `[{"sku":"rp-10","stock":5,"value":20}]`))},
		{"skus", string(campaignBody(bl, starts, ends, 1000, `[{"sku":"rp-10","stock":5,"value":10},{"sku":"rp-20","stock":5,"value":20}]`))},
		{"skus[0].sku", string(campaignBody(bl, starts, ends, 1000, `[{"sku":"rp-11","stock":5,"value":10}]`))},
	} {
		err := put(t, e.Cat, id, []byte(tc.body))
		var se *catalog.StartedError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("change of %s after the start: %v; want a StartedError naming %s", tc.field, err, tc.field)
		}
	}
	err := put(t, e.Cat, id, campaignBody(bl, starts, ends, 1000, `[{"sku":"rp-10","stock":2,"value":10}]`))
	var ce *catalog.ConflictError
	if !errors.As(err, &ce) || ce.Field != "skus[0].stock" {
		t.Errorf("stock below the 3 given out: %v; want a ConflictError naming skus[0].stock", err)
	}
	after := fmt.Sprint(e.RDB.HGetAll(ctx, rkeys.Meta(id)).Val(), e.RDB.HGetAll(ctx, rkeys.SKU(id, "rp-10")).Val())
	if after != before {
		t.Fatalf("a refused PUT changed Redis:\n%s\nwas\n%s", after, before)
	}
	var pgStarts time.Time
	if err := e.PG.QueryRow(ctx, `SELECT starts_at FROM campaigns WHERE id = $1`, id).Scan(&pgStarts); err != nil || !pgStarts.Equal(starts) {
		t.Fatalf("a refused PUT changed Postgres: starts_at %v %v", pgStarts, err)
	}
	// Allowed: a larger stock, a later end, a new name and budget. Stock left = 8 - 3.
	if err := put(t, e.Cat, id, campaignBody(bl, starts, ends.Add(time.Hour), 2000, `[{"sku":"rp-10","stock":8,"value":10}]`)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(e.RDB.HMGet(ctx, rkeys.SKU(id, "rp-10"), "stock", "taken", "total").Val()); got != "[5 3 8]" {
		t.Fatalf("after raising the stock to 8: stock/taken/total %s, want [5 3 8]", got)
	}
	if got := fmt.Sprint(e.RDB.HMGet(ctx, rkeys.Meta(id), "spent", "taken", "budget").Val()); got != "[30 3 2000]" {
		t.Fatalf("after the change: spent/taken/budget %s, want [30 3 2000]", got)
	}
}
