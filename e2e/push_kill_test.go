package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/gateway/push"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestPushGatewayKilledTwiceIssuesEachVoucherOnce (issue 18: "one within budget, with
// the pusher killed mid-way and restarted, issues each voucher exactly once"): a push of
// 60,000 users over 3 tiers (one user in two tiers) through a real gateway binary, the
// gateway SIGKILLed while the push's progress shows some but not all issued and claims
// of its batches in flight are decided past the cursor (counted nowhere), restarted,
// killed again further on, restarted again; the push resumes (once the dead runner's
// lease ran out) and ends done. After the settler binary settled: every member holds
// exactly one voucher, of its tier's SKU, on the push's channel; no user holds two; the
// push's issued count is the rows; each SKU's stock and taken, the campaign's and the
// business line's spent equal what the rows add up to, nothing is held and the escrow
// is released.
func TestPushGatewayKilledTwiceIssuesEachVoucherOnce(t *testing.T) {
	s := start(t, opts{})
	ctx := context.Background()
	type tier struct {
		sku          string
		users, value int64
		stock        int64
	}
	tiers := []tier{{"gold", 20_000, 50, 21_000}, {"silver", 20_000, 20, 21_000}, {"bronze", 20_000, 10, 21_000}}
	var skus []sku
	var budget int64
	for _, tr := range tiers {
		skus = append(skus, sku{SKU: tr.sku, Stock: tr.stock, Value: tr.value})
		budget += tr.stock * tr.value
	}
	bl := s.businessLine(budget)
	camp := s.campaign(bl, budget, 1, skus...)

	// Segments: names sort in tier order (a-, b-, c-), so a user in two tiers gets the
	// SKU of the first (DESIGN.md "Push"). want is each member's SKU.
	want := map[string]string{}
	body := map[string]string{}
	prefix := testenv.ID(t, "pk")
	var shared string
	for i, tr := range tiers {
		seg := fmt.Sprintf("%s-%c-%s", prefix, 'a'+i, tr.sku)
		var b strings.Builder
		for j := int64(0); j < tr.users; j++ {
			u := fmt.Sprintf("%s-u%06d", seg, j)
			b.WriteString(u + "\n")
			want[u] = tr.sku
		}
		if i == 0 {
			shared = fmt.Sprintf("%s-u%06d", seg, 0)
		} else if i == 1 {
			b.WriteString(shared + "\n") // also in tier a: gets gold, once
		}
		if code, rb := s.adminText("PUT", "/admin/v1/segments/"+seg, b.String()); code != 200 {
			t.Fatalf("segment %s: %d %s", seg, code, rb)
		}
		body[seg] = tr.sku
	}
	total := int64(len(want))

	pushID := testenv.ID(t, "push")
	path := "/admin/v1/campaigns/" + camp + "/pushes/" + pushID
	if code, b := s.adminDo("PUT", path, map[string]any{"tiers": body}); code != 202 {
		t.Fatalf("PUT push: %d %s", code, b)
	}
	// Progress is read from Postgres directly: the gateway is dead part of the time.
	progress := func() (state string, tot, issued int64, refused map[string]int64) {
		var rj []byte
		if err := s.pg.QueryRow(ctx, `SELECT state, total, issued, refused FROM pushes WHERE campaign_id = $1 AND push_id = $2`,
			camp, pushID).Scan(&state, &tot, &issued, &rj); err != nil {
			t.Fatal(err)
		}
		refused = map[string]int64{}
		if err := json.Unmarshal(rj, &refused); err != nil {
			t.Fatalf("refused %q: %v", rj, err)
		}
		return
	}
	members := make([]string, 0, len(want))
	for u := range want {
		members = append(members, u)
	}
	sort.Strings(members)
	// decidedPast counts the members in the 2 batches past the push's cursor (the
	// gateway's runner has 2 batches of 2,048 in flight) whose claim is decided (a record
	// A or D): what the runner's batches in flight decided and no count includes yet.
	var nonce string
	if err := s.pg.QueryRow(ctx, `SELECT nonce FROM pushes WHERE campaign_id = $1 AND push_id = $2`, camp, pushID).Scan(&nonce); err != nil {
		t.Fatal(err)
	}
	decidedPast := func() (string, int) {
		var cursor string
		if err := s.pg.QueryRow(ctx, `SELECT cursor_user FROM pushes WHERE campaign_id = $1 AND push_id = $2`, camp, pushID).Scan(&cursor); err != nil {
			t.Fatal(err)
		}
		pipe := s.rdb.Pipeline()
		var cmds []*redis.StringCmd
		for _, u := range members[sort.SearchStrings(members, cursor+"\x00"):] {
			if len(cmds) == 2*2048 {
				break
			}
			cmds = append(cmds, pipe.Get(ctx, rkeys.Request(camp, push.RequestID(nonce, u))))
		}
		_, _ = pipe.Exec(ctx) // redis.Nil for the members not decided yet
		n := 0
		for _, c := range cmds {
			if v := c.Val(); strings.HasPrefix(v, "A\t") || strings.HasPrefix(v, "D\t") {
				n++
			}
		}
		return cursor, n
	}
	// waitPast polls (within d) until the push has issued more than after, is not done,
	// and has claims decided past its cursor (a batch in flight); it fails if the push
	// ends first (the kill would not be mid-way).
	waitPast := func(after int64, d time.Duration, what string) int64 {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			state, tot, issued, _ := progress()
			if tot != total {
				t.Fatalf("push total %d; want %d", tot, total)
			}
			if state == "done" || issued >= total {
				t.Fatalf("%s: the push ended (%s, %d issued) before the kill: make it bigger", what, state, issued)
			}
			if issued > after {
				if _, n := decidedPast(); n > 0 {
					return issued
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not past %d issued within %s (state %s, %d issued)", what, after, d, state, issued)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// The restarted gateway's runner is another owner: it takes the push once the dead
	// one's lease (15 s) ran out.
	seen := waitPast(0, 60*time.Second, "first kill")
	s.gw.Kill()
	_, _, at1, _ := progress()
	cur, past := decidedPast()
	t.Logf("kill -9 #1: progress showed %d issued and a batch in flight, %d at the kill (of %d); %d claims decided past the cursor %s after it", seen, at1, total, past, cur)
	if at1 <= 0 || at1 >= total {
		t.Fatalf("first kill at %d issued of %d: not mid-way", at1, total)
	}
	s.startGateway()
	seen = waitPast(at1, 90*time.Second, "second kill")
	s.gw.Kill()
	_, _, at2, _ := progress()
	cur, past = decidedPast()
	t.Logf("kill -9 #2: progress showed %d issued and a batch in flight, %d at the kill; %d claims decided past the cursor %s after it", seen, at2, past, cur)
	if at2 <= at1 || at2 >= total {
		t.Fatalf("second kill at %d issued (first at %d) of %d: not mid-way", at2, at1, total)
	}
	s.startGateway()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		state, _, _, _ := progress()
		if state == "done" {
			break
		}
		if state != "running" || time.Now().After(deadline) {
			t.Fatalf("push %s after the restarts (want running, then done within 3m)", state)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, _, issued, refused := progress()
	if issued != total || len(refused) != 0 {
		t.Fatalf("done with %d issued, refused %v; want all %d issued", issued, refused, total)
	}
	// The same PUT after the end answers the push as it is.
	if code, b := s.adminDo("PUT", path, map[string]any{"tiers": body}); code != 200 {
		t.Errorf("same PUT after done: %d %s", code, b)
	}

	// Settlement: the settler writes every durable claim; waited for while rows keep
	// coming (at most 30 s without a new row, 4 minutes in all).
	var rows, last int64
	stalled, end := time.Now().Add(30*time.Second), time.Now().Add(4*time.Minute)
	for {
		rows = s.rows(camp)
		inflight, err := s.rdb.HLen(ctx, rkeys.Inflight(camp)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if rows >= total && inflight == 0 {
			break
		}
		if rows > last {
			last, stalled = rows, time.Now().Add(30*time.Second)
		}
		if time.Now().After(stalled) || time.Now().After(end) {
			t.Fatalf("settlement: %d rows of %d, %d in flight", rows, total, inflight)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every member exactly one voucher of its tier's SKU, on the push's channel.
	got := map[string]string{}
	perSKU := map[string]int64{}
	var spent int64
	r, err := s.pg.Query(ctx, `SELECT user_id, sku, channel, value FROM claims WHERE campaign_id = $1`, camp)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var u, k, ch string
		var v int64
		if err := r.Scan(&u, &k, &ch, &v); err != nil {
			t.Fatal(err)
		}
		if prev, dup := got[u]; dup {
			t.Errorf("user %s holds two vouchers (%s and %s)", u, prev, k)
		}
		if ch != "push:"+pushID {
			t.Errorf("user %s: claim on channel %q", u, ch)
		}
		got[u] = k
		perSKU[k]++
		spent += v
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if int64(len(got)) != total || rows != total {
		t.Errorf("%d rows for %d users; want %d each", rows, len(got), total)
	}
	bad := 0
	for u, k := range want {
		if got[u] != k {
			if bad++; bad <= 5 {
				t.Errorf("member %s holds %q; want one %q", u, got[u], k)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d members without their tier's voucher", bad)
	}

	// Redis: each counter is what the rows add up to; nothing held; the escrow released.
	var wantSpent int64
	for _, tr := range tiers {
		n := perSKU[tr.sku]
		wantSpent += n * tr.value
		key := rkeys.SKU(camp, tr.sku)
		if st, tk, h := s.hgetInt(key, "stock"), s.hgetInt(key, "taken"), s.hgetInt(key, "held"); st != tr.stock-n || tk != n || h != 0 {
			t.Errorf("sku %s: stock %d taken %d held %d; want %d, %d, 0 (%d rows)", tr.sku, st, tk, h, tr.stock-n, n, n)
		}
	}
	if spent != wantSpent {
		t.Errorf("rows' values add up to %d; want %d", spent, wantSpent)
	}
	meta := rkeys.Meta(camp)
	if sp, tk, h := s.hgetInt(meta, "spent"), s.hgetInt(meta, "taken"), s.hgetInt(meta, "held"); sp != spent || tk != rows || h != 0 {
		t.Errorf("campaign: spent %d taken %d held %d; want %d, %d, 0", sp, tk, h, spent, rows)
	}
	if sp := s.hgetInt(rkeys.BusinessLine(bl), "spent"); sp != spent {
		t.Errorf("business line spent %d; want %d", sp, spent)
	}
	if n, err := s.rdb.HLen(ctx, rkeys.Users(camp)).Result(); err != nil || n != total {
		t.Errorf("users hash %d (%v); want %d", n, err, total)
	}
	if st, err := s.rdb.HGet(ctx, rkeys.Pushes(camp), "st:"+pushID).Result(); err != nil || st != "2" {
		t.Errorf("escrow state %q (%v); want 2 (released)", st, err)
	}
}
