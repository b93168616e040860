package vouchers_test

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/vouchers"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/internal/voucher"
	"github.com/flashgate/flashgate/settler/expire"
)

// lifeCampaign creates, through the campaign PUT, a started campaign whose one SKU
// rp-50 has min_spend 10000 and excludes "newbie", with the given transfer settings
// (extra is spliced into the body, e.g. `"transferable":true,`), and settles n claims
// of it. It returns the campaign, the claim ids and their users.
func lifeCampaign(t *testing.T, e *testenv.Env, extra string, n int) (string, []string, []string) {
	t.Helper()
	ctx := testenv.Ctx(t, 30*time.Second)
	bl := e.BusinessLine(1_000_000_000)
	id := testenv.ID(t, "vl")
	now := time.Now()
	body := fmt.Sprintf(`{"name":"life","business_line":%q,"starts_at":%q,"ends_at":%q,"per_user_limit":1,
		"budget":1000000,"voucher_ttl":"72h",%s"skus":[{"sku":"rp-50","stock":%d,"value":50,
		"min_spend":10000,"excluded_categories":["newbie"]}]}`, bl,
		now.Add(-time.Minute).UTC().Format(time.RFC3339), now.Add(time.Hour).UTC().Format(time.RFC3339), extra, n)
	cp, err := catalog.DecodeCampaign(id, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Cat.PutCampaign(ctx, cp); err != nil {
		t.Fatal(err)
	}
	var ids, users []string
	for i := 0; i < n; i++ {
		users = append(users, fmt.Sprintf("%s-u-%d", id, i))
		a, err := testenv.ScriptClaim(ctx, e.RDB, id, "rp-50", users[i], fmt.Sprintf("rq-%d", i))
		if err != nil || a.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: code %d err %v", i, a.Code, err)
		}
		ids = append(ids, a.ClaimID)
	}
	if _, err := testenv.SettleOutbox(ctx, e.RDB, e.PG, id); err != nil {
		t.Fatal(err)
	}
	return id, ids, users
}

func countEvents(t *testing.T, e *testenv.Env, typ, key string) int {
	t.Helper()
	var n int
	if err := e.PG.QueryRow(testenv.Ctx(t, 5*time.Second), `SELECT count(*) FROM events WHERE type = $1 AND key = $2`,
		typ, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func state(t *testing.T, s *vouchers.Store, id string) voucher.Voucher {
	t.Helper()
	v, ok, err := s.Voucher(testenv.Ctx(t, 5*time.Second), id)
	if err != nil || !ok {
		t.Fatalf("voucher %s: ok %v err %v", id, ok, err)
	}
	return v
}

func TestRedeemAgainstAnOrder(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	_, ids, u := lifeCampaign(t, e, "", 1)
	s, _ := vouchers.New(e.PG)
	id := ids[0]
	steps := []struct {
		name  string
		user  string
		order voucher.Order
		want  int
		state string
	}{
		{"below the minimum", u[0], voucher.Order{ID: "o-1", Amount: 9999, Category: "food"}, voucher.RedeemBelowMin, "settled"},
		{"excluded category", u[0], voucher.Order{ID: "o-1", Amount: 20000, Category: "newbie"}, voucher.RedeemNotApplicable, "settled"},
		{"not the owner", "u-9", voucher.Order{ID: "o-1", Amount: 20000, Category: "food"}, voucher.RedeemNotOwner, "settled"},
		{"at the minimum", u[0], voucher.Order{ID: "o-1", Amount: 10000, Category: "food"}, voucher.RedeemOK, "redeemed"},
		{"the same order again", u[0], voucher.Order{ID: "o-1", Amount: 10000, Category: "food"}, voucher.RedeemOK, "redeemed"},
		{"another order", u[0], voucher.Order{ID: "o-2", Amount: 10000, Category: "food"}, voucher.RedeemOtherOrder, "redeemed"},
	}
	var first time.Time
	for _, st := range steps {
		v, res, err := s.RedeemOrder(ctx, id, st.user, st.order)
		if err != nil || res != st.want {
			t.Fatalf("%s: result %d err %v, want %d", st.name, res, err, st.want)
		}
		if got := state(t, s, id).State; got != st.state {
			t.Fatalf("%s: state %s, want %s", st.name, got, st.state)
		}
		if res == voucher.RedeemOK {
			if first.IsZero() {
				first = v.RedeemedAt
			} else if !v.RedeemedAt.Equal(first) {
				t.Fatalf("%s: redeemed_at %v, want the first answer's %v", st.name, v.RedeemedAt, first)
			}
		}
	}
	if n := countEvents(t, e, "redeemed", id); n != 1 {
		t.Fatalf("redeemed events: %d, want 1", n)
	}
	var order string
	var amount int64
	if err := e.PG.QueryRow(ctx, `SELECT order_id, order_amount FROM claims WHERE claim_id = $1`, id).Scan(&order, &amount); err != nil || order != "o-1" || amount != 10000 {
		t.Fatalf("stored order %q %d err %v; want o-1 10000", order, amount, err)
	}
}

func TestRollbackThenRedeemAgain(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	_, ids, u := lifeCampaign(t, e, "", 2)
	s, _ := vouchers.New(e.PG)
	id := ids[0]
	o1 := voucher.Order{ID: "o-1", Amount: 12000, Category: "food"}
	if _, res, err := s.Rollback(ctx, id, u[0], "o-1"); err != nil || res != voucher.RollbackNoOrder {
		t.Fatalf("rollback before any redeem: %d %v, want RollbackNoOrder", res, err)
	}
	if _, res, err := s.RedeemOrder(ctx, id, u[0], o1); err != nil || res != voucher.RedeemOK {
		t.Fatalf("redeem: %d %v", res, err)
	}
	if _, res, err := s.Rollback(ctx, id, u[0], "o-other"); err != nil || res != voucher.RollbackNoOrder {
		t.Fatalf("rollback of another order: %d %v, want RollbackNoOrder", res, err)
	}
	if _, res, err := s.Rollback(ctx, id, "u-9", "o-1"); err != nil || res != voucher.RedeemNotOwner {
		t.Fatalf("rollback by another user: %d %v, want RedeemNotOwner", res, err)
	}
	for i := 0; i < 2; i++ { // idempotent
		v, res, err := s.Rollback(ctx, id, u[0], "o-1")
		if err != nil || res != voucher.RedeemOK || v.State != "settled" || !v.RedeemedAt.IsZero() {
			t.Fatalf("rollback %d: %d %v %+v, want OK settled", i, res, err, v)
		}
	}
	if n := countEvents(t, e, "rolled_back", id); n != 1 {
		t.Fatalf("rolled_back events: %d, want 1", n)
	}
	if _, res, err := s.RedeemOrder(ctx, id, u[0], voucher.Order{ID: "o-2", Amount: 15000, Category: "food"}); err != nil || res != voucher.RedeemOK {
		t.Fatalf("redeem after rollback: %d %v", res, err)
	}
	var live, rolled int
	if err := e.PG.QueryRow(ctx, `SELECT count(*) FILTER (WHERE rolled_back_at IS NULL), count(*) FILTER (WHERE rolled_back_at IS NOT NULL)
		FROM redemptions WHERE claim_id = $1`, id).Scan(&live, &rolled); err != nil || live != 1 || rolled != 1 {
		t.Fatalf("redemptions: live %d rolled back %d err %v; want 1 and 1", live, rolled, err)
	}

	// A refund after the voucher's expiry gives it back expired: still unusable, and the
	// expiry job then recovers its value.
	id2 := ids[1]
	if _, res, err := s.RedeemOrder(ctx, id2, u[1], o1); err != nil || res != voucher.RedeemOK {
		t.Fatalf("redeem 2: %d %v", res, err)
	}
	if _, err := e.PG.Exec(ctx, `UPDATE claims SET expires_at = now() - interval '1 second' WHERE claim_id = $1`, id2); err != nil {
		t.Fatal(err)
	}
	v, res, err := s.Rollback(ctx, id2, u[1], "o-1")
	if err != nil || res != voucher.RedeemOK || v.State != "expired" {
		t.Fatalf("rollback past expiry: %d %v state %s; want OK, expired", res, err, v.State)
	}
	if _, res, _ := s.RedeemOrder(ctx, id2, u[1], voucher.Order{ID: "o-3", Amount: 20000, Category: "food"}); res != voucher.RedeemExpired {
		t.Fatalf("redeem after a rollback past expiry: %d, want RedeemExpired", res)
	}
}

// A redeem racing its own expiry ends in exactly one of the two: redeemed (one redeemed
// event, no release) or expired (one expired event, one release).
func TestRedeemRacesExpiry(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	const n = 60
	camp, ids, u := lifeCampaign(t, e, "", n)
	s, _ := vouchers.New(e.PG)
	// Due a moment from now, so that redeems (judged on the database clock) and the
	// expiry job cross the line together.
	if _, err := e.PG.Exec(ctx, `UPDATE claims SET expires_at = now() + interval '300 milliseconds' WHERE campaign_id = $1`, camp); err != nil {
		t.Fatal(err)
	}
	x, err := expire.New(expire.Config{Batch: 5, Campaigns: []string{camp}}, e.RDB, e.PG, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := x.Once(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	results := make([]int, n)
	time.Sleep(250 * time.Millisecond)
	var rw sync.WaitGroup
	for i := range ids {
		rw.Add(1)
		go func(i int) {
			defer rw.Done()
			time.Sleep(time.Duration(i) * time.Millisecond)
			_, res, err := s.RedeemOrder(ctx, ids[i], u[i], voucher.Order{ID: "o", Amount: 10000, Category: "food"})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}(i)
	}
	rw.Wait()
	// Let the expirer take every voucher not redeemed.
	testenv.Eventually(t, 10*time.Second, "all vouchers redeemed or expired", func() bool {
		var left int
		_ = e.PG.QueryRow(ctx, `SELECT count(*) FROM claims WHERE campaign_id = $1 AND state = 'settled'`, camp).Scan(&left)
		return left == 0
	})
	close(stop)
	wg.Wait()
	var redeemed, expired int
	for i, id := range ids {
		var st string
		var releases int
		if err := e.PG.QueryRow(ctx, `SELECT state, (SELECT count(*) FROM budget_ledger WHERE claim_id = $1 AND kind = 'release')
			FROM claims WHERE claim_id = $1`, id).Scan(&st, &releases); err != nil {
			t.Fatal(err)
		}
		r, x := countEvents(t, e, "redeemed", id), countEvents(t, e, "expired", id)
		switch {
		case st == "redeemed" && results[i] == voucher.RedeemOK && r == 1 && x == 0 && releases == 0:
			redeemed++
		case st == "expired" && results[i] == voucher.RedeemExpired && r == 0 && x == 1 && releases == 1:
			expired++
		default:
			t.Errorf("%s: state %s, redeem answered %d, redeemed events %d, expired events %d, releases %d", id, st, results[i], r, x, releases)
		}
	}
	t.Logf("redeemed %d, expired %d of %d", redeemed, expired, n)
}

func TestTransfer(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 60*time.Second)
	const n = 20
	camp, ids, u := lifeCampaign(t, e, `"transferable":true,"max_transfers":2,`, n+4)
	s, _ := vouchers.New(e.PG)
	var spent0 string
	spent0 = e.RDB.HGet(ctx, "{"+camp+"}:meta", "spent").Val()

	// The same voucher to two users at once: exactly one wins.
	for i := 0; i < n; i++ {
		id, owner := ids[i], u[i]
		var wg sync.WaitGroup
		res := make([]int, 2)
		for k := 0; k < 2; k++ {
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				_, r, err := s.Transfer(ctx, id, owner, fmt.Sprintf("%s-to-%d-%d", camp, i, k))
				if err != nil {
					t.Error(err)
				}
				res[k] = r
			}(k)
		}
		wg.Wait()
		won := 0
		for _, r := range res {
			if r == voucher.RedeemOK {
				won++
			} else if r != voucher.RedeemNotOwner {
				t.Fatalf("loser answered %d, want RedeemNotOwner", r)
			}
		}
		var hops, audited int
		var to string
		if err := e.PG.QueryRow(ctx, `SELECT hops, user_id, (SELECT count(*) FROM transfers WHERE claim_id = $1) FROM claims WHERE claim_id = $1`,
			id).Scan(&hops, &to, &audited); err != nil {
			t.Fatal(err)
		}
		if won != 1 || hops != 1 || audited != 1 || countEvents(t, e, "transferred", id) != 1 {
			t.Fatalf("voucher %s: %d winners, hops %d, %d audited, want one of each", id, won, hops, audited)
		}
		mine, err := s.Mine(ctx, to, voucher.Cursor{}, 10)
		if err != nil || len(mine) != 1 || mine[0].ClaimID != id {
			t.Fatalf("new owner %s lists %+v err %v", to, mine, err)
		}
		if old, _ := s.Mine(ctx, owner, voucher.Cursor{}, 10); len(old) != 0 {
			t.Fatalf("old owner still lists %+v", old)
		}
	}
	if got := e.RDB.HGet(ctx, "{"+camp+"}:meta", "spent").Val(); got != spent0 {
		t.Fatalf("campaign spent moved from %s to %s by transfers", spent0, got)
	}

	// The hops limit: max_transfers 2 lets a second move and refuses a third.
	id, owner := ids[n], u[n]
	if _, r, _ := s.Transfer(ctx, id, owner, camp+"-h1"); r != voucher.RedeemOK {
		t.Fatalf("hop 1: %d", r)
	}
	if _, r, _ := s.Transfer(ctx, id, camp+"-h1", camp+"-h2"); r != voucher.RedeemOK {
		t.Fatalf("hop 2: %d", r)
	}
	if _, r, _ := s.Transfer(ctx, id, camp+"-h2", camp+"-h3"); r != voucher.TransferNotAllowed {
		t.Fatalf("hop 3: %d, want TransferNotAllowed", r)
	}
	var chain []string
	rows, _ := e.PG.Query(ctx, `SELECT from_user || '>' || to_user FROM transfers WHERE claim_id = $1 ORDER BY hop`, id)
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		chain = append(chain, c)
	}
	rows.Close()
	if fmt.Sprint(chain) != fmt.Sprintf("[%s>%s-h1 %s-h1>%s-h2]", owner, camp, camp, camp) {
		t.Fatalf("audited chain %v", chain)
	}

	// A redeemed voucher cannot move.
	id, owner = ids[n+1], u[n+1]
	if _, r, _ := s.RedeemOrder(ctx, id, owner, voucher.Order{ID: "o", Amount: 10000, Category: "food"}); r != voucher.RedeemOK {
		t.Fatalf("redeem: %d", r)
	}
	if _, r, _ := s.Transfer(ctx, id, owner, "x"); r != voucher.TransferNotUsable {
		t.Fatalf("transfer of a redeemed voucher: %d, want TransferNotUsable", r)
	}

	// Velocity: an owner over TransferMax in the window is refused (on a voucher whose
	// hops are not used up).
	s.TransferMax = 1
	x := camp + "-x"
	for _, k := range []int{n + 2, n + 3} {
		if _, r, _ := s.Transfer(ctx, ids[k], u[k], x); r != voucher.RedeemOK {
			t.Fatalf("transfer %d to %s: %d", k, x, r)
		}
	}
	if _, r, _ := s.Transfer(ctx, ids[n+2], x, camp+"-y"); r != voucher.RedeemOK {
		t.Fatalf("first transfer by %s: %d", x, r)
	}
	if _, r, _ := s.Transfer(ctx, ids[n+3], x, camp+"-y"); r != voucher.TransferRateLimited {
		t.Fatalf("second transfer by %s within the window: %d, want TransferRateLimited", x, r)
	}
	if v := state(t, s, ids[n+3]); v.UserID != x {
		t.Fatalf("refused transfer moved the voucher to %s", v.UserID)
	}
}

func TestTransferNotTransferable(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, 30*time.Second)
	_, ids, u := lifeCampaign(t, e, "", 1)
	s, _ := vouchers.New(e.PG)
	if _, r, err := s.Transfer(ctx, ids[0], u[0], "x"); err != nil || r != voucher.TransferNotAllowed {
		t.Fatalf("transfer in a non-transferable campaign: %d %v", r, err)
	}
	var audited int
	_ = e.PG.QueryRow(ctx, `SELECT count(*) FROM transfers WHERE claim_id = $1`, ids[0]).Scan(&audited)
	if v := state(t, s, ids[0]); v.UserID != u[0] || audited != 0 {
		t.Fatalf("owner %s, %d audited; want unchanged", v.UserID, audited)
	}
}
