package expire_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/api"
	"github.com/flashgate/flashgate/gateway/vouchers"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
	"github.com/flashgate/flashgate/settler/expire"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func newExpirer(t *testing.T, e *testenv.Env, cfg expire.Config) *expire.Expirer {
	t.Helper()
	x, err := expire.New(cfg, e.RDB, e.PG, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// sale claims n vouchers (one per user) and settles them into Postgres.
func sale(t *testing.T, e *testenv.Env, c *testenv.Campaign, sku string, n int) []string {
	t.Helper()
	ctx := testenv.Ctx(t, 30*time.Second)
	var ids []string
	for i := 0; i < n; i++ {
		a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, sku, fmt.Sprintf("u-%s-%d", sku, i), fmt.Sprintf("rq-%s-%d", sku, i))
		if err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: code %d err %v", i, a.Code, err)
		}
		ids = append(ids, a.ClaimID)
	}
	if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, c.ID); err != nil {
		t.Fatal(err)
	}
	return ids
}

// age makes a campaign's vouchers due: their expires_at is moved into the past, as if
// the voucher TTL had run out.
func age(t *testing.T, e *testenv.Env, campaign string) {
	t.Helper()
	if _, err := e.PG.Exec(testenv.Ctx(t, 5*time.Second),
		`UPDATE claims SET expires_at = now() - interval '1 second' WHERE campaign_id = $1`, campaign); err != nil {
		t.Fatal(err)
	}
}

func hget(t *testing.T, e *testenv.Env, key, field string) int64 {
	t.Helper()
	v, err := e.RDB.HGet(testenv.Ctx(t, 5*time.Second), key, field).Result()
	if err != nil && err.Error() != "redis: nil" {
		t.Fatal(err)
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

type books struct {
	expired, redeemed, settled, releases int64
	released                             int64
}

func readBooks(t *testing.T, e *testenv.Env, campaign string) books {
	t.Helper()
	var b books
	err := e.PG.QueryRow(testenv.Ctx(t, 5*time.Second), `SELECT
		count(*) FILTER (WHERE state = 'expired'), count(*) FILTER (WHERE state = 'redeemed'),
		count(*) FILTER (WHERE state = 'settled'),
		(SELECT count(*) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'release'),
		(SELECT coalesce(sum(amount), 0) FROM budget_ledger WHERE campaign_id = $1 AND kind = 'release')
		FROM claims WHERE campaign_id = $1`, campaign).Scan(&b.expired, &b.redeemed, &b.settled, &b.releases, &b.released)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Two expirers racing over the same due vouchers recover each voucher's value exactly
// once, in Redis (campaign and business line) and in the ledger; a voucher redeemed
// before it expired is never expired; redeeming an expired voucher is refused.
func TestTwoExpirersRecoverEachVoucherOnce(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	const n = 120
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: n, Value: 50}}})
	ids := sale(t, e, c, "rp-50", n)

	store, err := vouchers.New(e.PG)
	if err != nil {
		t.Fatal(err)
	}
	const redeemed = 3
	for i := 0; i < redeemed; i++ {
		if _, code, err := store.Redeem(ctx, ids[i], fmt.Sprintf("u-rp-50-%d", i)); err != nil || code != api.RedeemOK {
			t.Fatalf("redeem %s: code %d err %v", ids[i], code, err)
		}
	}
	spent0 := hget(t, e, rkeys.Meta(c.ID), "spent")
	blSpent0 := hget(t, e, rkeys.BusinessLine(c.BusinessLine), "spent")
	if spent0 != n*50 || blSpent0 != n*50 {
		t.Fatalf("before expiry: campaign spent %d, business line spent %d; want %d", spent0, blSpent0, n*50)
	}
	age(t, e, c.ID)

	only := []string{c.ID} // the database is shared: expire this test's vouchers only
	x1 := newExpirer(t, e, expire.Config{Batch: 7, Campaigns: only})
	x2 := newExpirer(t, e, expire.Config{Batch: 11, Campaigns: only})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total expire.Stats
	for _, x := range []*expire.Expirer{x1, x2, x1, x2} {
		wg.Add(1)
		go func(x *expire.Expirer) {
			defer wg.Done()
			st, err := x.Once(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total.Expired += st.Expired
			total.Recovered += st.Recovered
			mu.Unlock()
		}(x)
	}
	wg.Wait()
	if st, err := x1.Once(ctx); err != nil || st.Expired != 0 {
		t.Fatalf("a pass after everything expired: %+v %v", st, err)
	}
	const expired = n - redeemed
	// (An expirer of another process on the shared dev stack may take some: the books
	// and the counters below are what must be exact.)
	if total.Expired > expired || total.Recovered > expired*50 || total.Expired == 0 {
		t.Fatalf("expirers together: %+v; want up to %d expired, %d recovered", total, expired, expired*50)
	}
	b := readBooks(t, e, c.ID)
	if b.expired != expired || b.redeemed != redeemed || b.settled != 0 || b.releases != expired || b.released != expired*50 {
		t.Fatalf("books %+v; want %d expired with one release each, %d redeemed", b, expired, redeemed)
	}
	if got, want := hget(t, e, rkeys.Meta(c.ID), "spent"), int64(redeemed*50); got != want {
		t.Fatalf("campaign spent %d, want %d (only the redeemed vouchers)", got, want)
	}
	if got := hget(t, e, rkeys.Meta(c.ID), recovery.FieldReleased); got != expired*50 {
		t.Fatalf("campaign released %d, want %d", got, expired*50)
	}
	if got, want := hget(t, e, rkeys.BusinessLine(c.BusinessLine), "spent"), int64(redeemed*50); got != want {
		t.Fatalf("business line spent %d, want %d", got, want)
	}
	// Without recycle_stock the units stay sold.
	if got := hget(t, e, rkeys.SKU(c.ID, "rp-50"), "stock"); got != 0 {
		t.Fatalf("stock %d after expiry without recycling, want 0", got)
	}
	// A redeemed voucher stays redeemed; an expired one cannot be redeemed.
	for i := 0; i < redeemed; i++ {
		v, ok, err := store.Voucher(ctx, ids[i])
		if err != nil || !ok || v.State != "redeemed" {
			t.Fatalf("redeemed voucher %s: %+v ok %v err %v", ids[i], v, ok, err)
		}
	}
	if _, code, err := store.Redeem(ctx, ids[n-1], fmt.Sprintf("u-rp-50-%d", n-1)); err != nil || code != api.RedeemExpired {
		t.Fatalf("redeem an expired voucher: code %d err %v; want RedeemExpired (409)", code, err)
	}
}

// An expirer that dies after release.lua and before its commit: the next pass expires the
// claim and gives nothing back twice. Recycling puts the unit back on sale once.
func TestCrashBetweenReleaseAndCommit(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	c := e.Campaign(testenv.Spec{Recycle: true, SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 2, Value: 50}}})
	ids := sale(t, e, c, "rp-50", 2)
	age(t, e, c.ID)

	// What the dead expirer did in Redis.
	res, err := scripts.Release.Run(ctx, e.RDB, []string{rkeys.Meta(c.ID), rkeys.BusinessLine(c.BusinessLine), recovery.Released(c.ID),
		rkeys.SKU(c.ID, "rp-50")}, "1", ids[0], 50).Int64Slice()
	if err != nil || len(res) != 1 || res[0] != 1 {
		t.Fatalf("release: %v %v", res, err)
	}
	if got := hget(t, e, rkeys.SKU(c.ID, "rp-50"), "stock"); got != 1 {
		t.Fatalf("stock %d after one recycled unit, want 1", got)
	}

	st, err := newExpirer(t, e, expire.Config{Campaigns: []string{c.ID}}).Once(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Expired > 2 || st.Recovered > 50 || st.Recycled > 1 {
		t.Fatalf("stats %+v; want at most 2 expired, 50 recovered now (the other 50 earlier), 1 recycled now", st)
	}
	if got := hget(t, e, rkeys.Meta(c.ID), "spent"); got != 0 {
		t.Fatalf("campaign spent %d, want 0", got)
	}
	if got := hget(t, e, rkeys.BusinessLine(c.BusinessLine), "spent"); got != 0 {
		t.Fatalf("business line spent %d, want 0", got)
	}
	sku := rkeys.SKU(c.ID, "rp-50")
	if s, tk, rc := hget(t, e, sku, "stock"), hget(t, e, sku, "taken"), hget(t, e, sku, recovery.FieldRecycled); s != 2 || tk != 2 || rc != 2 {
		t.Fatalf("sku stock %d taken %d recycled %d; want 2, 2, 2", s, tk, rc)
	}
	if b := readBooks(t, e, c.ID); b.expired != 2 || b.releases != 2 || b.released != 100 {
		t.Fatalf("books %+v", b)
	}
	// The recycled units sell again.
	for i := 0; i < 3; i++ {
		a, err := testenv.ScriptClaim(ctx, e.RDB, c.ID, "rp-50", fmt.Sprintf("late-%d", i), fmt.Sprintf("late-rq-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		want := claim.CodeAccepted
		if i == 2 {
			want = claim.CodeSoldOut
		}
		if a.Code != want {
			t.Fatalf("late claim %d: code %d, want %d", i, a.Code, want)
		}
	}
}

// While a campaign is being rebuilt after a Redis loss, expiry waits: nothing is given
// back to counters that are about to be rewritten.
func TestFencedCampaignWaits(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	c := e.Campaign(testenv.Spec{})
	sale(t, e, c, "rp-50", 2)
	age(t, e, c.ID)
	if err := e.RDB.HSet(ctx, rkeys.Meta(c.ID), recovery.FieldRecovering, "tok").Err(); err != nil {
		t.Fatal(err)
	}
	x := newExpirer(t, e, expire.Config{Campaigns: []string{c.ID}})
	st, err := x.Once(ctx)
	if err != nil || st.Expired != 0 || st.Fenced != 2 {
		t.Fatalf("fenced: %+v %v; want 2 fenced, none expired", st, err)
	}
	if b := readBooks(t, e, c.ID); b.settled != 2 || b.releases != 0 {
		t.Fatalf("books %+v; want untouched", b)
	}
	if got := hget(t, e, rkeys.Meta(c.ID), "spent"); got != 100 {
		t.Fatalf("spent %d, want 100", got)
	}
	if err := e.RDB.HDel(ctx, rkeys.Meta(c.ID), recovery.FieldRecovering).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if b := readBooks(t, e, c.ID); b.expired != 2 || b.releases != 2 {
		t.Fatalf("after the rebuild: books %+v; want 2 expired", b)
	}
}

// A fenced campaign's vouchers, however old, do not hold up other campaigns' expiry.
func TestFencedCampaignDoesNotStarveOthers(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	fenced := e.Campaign(testenv.Spec{})
	other := e.Campaign(testenv.Spec{})
	sale(t, e, fenced, "rp-50", 3)
	sale(t, e, other, "rp-50", 2)
	if _, err := e.PG.Exec(ctx, `UPDATE claims SET expires_at = now() - interval '1 hour' WHERE campaign_id = $1`, fenced.ID); err != nil {
		t.Fatal(err)
	}
	age(t, e, other.ID)
	if err := e.RDB.HSet(ctx, rkeys.Meta(fenced.ID), recovery.FieldRecovering, "tok").Err(); err != nil {
		t.Fatal(err)
	}
	x := newExpirer(t, e, expire.Config{Batch: 1, Campaigns: []string{fenced.ID, other.ID}})
	st, err := x.Once(ctx)
	if err != nil || st.Fenced != 1 {
		t.Fatalf("stats %+v, err %v; want the fenced campaign's oldest claim seen once", st, err)
	}
	if b := readBooks(t, e, other.ID); b.expired != 2 {
		t.Fatalf("other campaign's books %+v; want its 2 vouchers expired in the same pass", b)
	}
	if b := readBooks(t, e, fenced.ID); b.settled != 3 {
		t.Fatalf("fenced campaign's books %+v; want untouched", b)
	}
}

func TestConfigErrors(t *testing.T) {
	e := testenv.New(t)
	for _, tc := range []struct {
		cfg  expire.Config
		want string
	}{
		{expire.Config{Interval: time.Millisecond}, "Interval"},
		{expire.Config{Batch: 10_000}, "Batch"},
		{expire.Config{MaxBatches: -1}, "MaxBatches"},
		{expire.Config{RedisTimeout: time.Microsecond}, "RedisTimeout"},
	} {
		if _, err := expire.New(tc.cfg, e.RDB, e.PG, quiet, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := expire.New(expire.Config{}, e.RDB, nil, quiet, nil); err == nil {
		t.Error("New without Postgres: no error")
	}
	_ = context.Background
}
