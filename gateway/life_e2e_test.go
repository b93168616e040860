package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// The voucher's life through the real gateway (CONTRACT.md "Issuance and the voucher's
// life"): bad input to redeem-against-an-order, rollback and transfer is a 400 naming the
// field and changes nothing; a blocked owner or receiver cannot transfer; the rules of
// the SKU and the campaign are answered with their reasons.
func TestVoucherLifeOverHTTP(t *testing.T) {
	g := startGateway(t)
	camp, _, rdb, pg := setupCampaign(t, `[{"sku":"rp-50","stock":10,"value":50,"min_spend":10000,"excluded_categories":["newbie"]}],
		"transferable":true`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Settled rows as the settler writes them.
	owner, other := testenv.ID(t, "u"), testenv.ID(t, "u")
	id := camp + ".0000000000000000000000001b"
	if _, err := pg.Exec(ctx, `INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id,
		device_id, ip, value, claimed_at, expires_at, kafka_partition, kafka_offset)
		VALUES ($1, $2, $3, 'bl', 'rp-50', $4, 'd-9', '198.18.0.1', 50, now(), now() + interval '1 hour', 0, 0)`,
		id, testenv.ID(t, "rq"), camp, owner); err != nil {
		t.Fatal(err)
	}
	post := func(path, body string) answer {
		return send(t, "POST", g.pub+"/v1/claims/"+id+path, "application/json", []byte(body))
	}
	snapshot := func() string {
		var st, user string
		var hops, reds, trs, evs int
		if err := pg.QueryRow(ctx, `SELECT state, user_id, hops,
			(SELECT count(*) FROM redemptions WHERE claim_id = $1), (SELECT count(*) FROM transfers WHERE claim_id = $1),
			(SELECT count(*) FROM events WHERE key = $1) FROM claims WHERE claim_id = $1`, id).
			Scan(&st, &user, &hops, &reds, &trs, &evs); err != nil {
			t.Fatal(err)
		}
		return strings.Join([]string{st, user, itoa(hops), itoa(reds), itoa(trs), itoa(evs)}, " ")
	}
	before := snapshot()
	bad := []struct{ path, body, field string }{
		{"/redeem", `{"user_id":"` + owner + `","order_id":"o-1","category":"food"}`, "amount"},
		{"/redeem", `{"user_id":"` + owner + `","order_id":"o-1","amount":-1,"category":"food"}`, "amount"},
		{"/redeem", `{"user_id":"` + owner + `","order_id":"o-1","amount":"12","category":"food"}`, "amount"},
		{"/redeem", `{"user_id":"` + owner + `","order_id":"o 1","amount":12000,"category":"food"}`, "order_id"},
		{"/redeem", `{"user_id":"` + owner + `","order_id":"o-1","amount":12000}`, "category"},
		{"/redeem", `{"user_id":"` + owner + `","order_id":"o-1","amount":12000,"category":"food","tip":1}`, "tip"},
		{"/redeem/rollback", `{"user_id":"` + owner + `"}`, "order_id"},
		{"/redeem/rollback", `{"user_id":"` + owner + `","order_id":"o-1","amount":1}`, "amount"},
		{"/transfer", `{"user_id":"` + owner + `"}`, "to_user_id"},
		{"/transfer", `{"user_id":"` + owner + `","to_user_id":"` + owner + `"}`, "to_user_id"},
		{"/transfer", `{"user_id":"` + owner + `","to_user_id":"a b"}`, "to_user_id"},
		{"/transfer", `{"to_user_id":"` + other + `"}`, "user_id"},
		{"/transfer", `[1]`, "body"},
	}
	for _, b := range bad {
		a := post(b.path, b.body)
		if a.status != 400 || !strings.Contains(string(a.body), `"`+b.field+`:`) {
			t.Errorf("%s %s: %s; want 400 naming %s", b.path, b.body, a, b.field)
		}
	}
	if a := send(t, "POST", g.pub+"/v1/claims/"+id+"/transfer", "text/plain", []byte(`{}`)); a.status != 415 {
		t.Errorf("transfer as text/plain: %s, want 415", a)
	}
	if got := snapshot(); got != before {
		t.Fatalf("bad input changed the voucher: %s -> %s", before, got)
	}

	// Blocks of either user refuse a transfer.
	for _, who := range []string{owner, other} {
		key := rkeys.Block(rkeys.KindUser, who)
		if err := rdb.Set(ctx, key, "test", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		a := post("/transfer", `{"user_id":"`+owner+`","to_user_id":"`+other+`"}`)
		rdb.Del(ctx, key)
		if a.status != 403 || !strings.Contains(string(a.body), "blocked") {
			t.Errorf("transfer with %s blocked: %s, want 403 blocked", who, a)
		}
	}
	if got := snapshot(); got != before {
		t.Fatalf("a refused transfer changed the voucher: %s -> %s", before, got)
	}

	// The SKU's rules, then a redeem, its replay, a rollback, and a transfer.
	order := func(oid string, amount, cat string) string {
		return `{"user_id":"` + owner + `","order_id":"` + oid + `","amount":` + amount + `,"category":"` + cat + `"}`
	}
	for _, c := range []struct {
		path, body string
		status     int
		want       string
	}{
		{"/redeem", order("o-1", "9999", "food"), 409, `"below_min_spend"`},
		{"/redeem", order("o-1", "20000", "newbie"), 409, `"not_applicable"`},
		{"/redeem", order("o-1", "10000", "food"), 200, `"state":"redeemed"`},
		{"/redeem", order("o-1", "10000", "food"), 200, `"state":"redeemed"`},
		{"/redeem", order("o-2", "10000", "food"), 409, `"already_redeemed"`},
		{"/transfer", `{"user_id":"` + owner + `","to_user_id":"` + other + `"}`, 409, `"not_usable"`},
		{"/redeem/rollback", `{"user_id":"` + owner + `","order_id":"o-2"}`, 409, `"not_redeemed_on_order"`},
		{"/redeem/rollback", `{"user_id":"` + owner + `","order_id":"o-1"}`, 200, `"state":"settled"`},
		{"/transfer", `{"user_id":"` + owner + `","to_user_id":"` + other + `"}`, 200, `"user_id":"` + other + `"`},
		{"/transfer", `{"user_id":"` + other + `","to_user_id":"` + owner + `"}`, 409, `"not_transferable"`}, // max_transfers 1
		{"/redeem", order("o-3", "10000", "food"), 404, `unknown_claim`},                                     // no longer the owner's
	} {
		if a := post(c.path, c.body); a.status != c.status || !strings.Contains(string(a.body), c.want) {
			t.Errorf("%s %s: %s; want %d with %s", c.path, c.body, a, c.status, c.want)
		}
	}
	if a := send(t, "GET", g.pub+"/v1/me/claims?user_id="+other, "", nil); a.status != 200 || !strings.Contains(string(a.body), id) {
		t.Errorf("new owner's list: %s; want %s", a, id)
	}
	if a := send(t, "GET", g.pub+"/v1/me/claims?user_id="+owner, "", nil); a.status != 200 || strings.Contains(string(a.body), id) {
		t.Errorf("old owner's list: %s; want without %s", a, id)
	}
	// The admin side: the expiring list (bounded, 400 naming the field) and the review.
	adm := func(path string) answer {
		return send(t, "GET", g.adm+"/admin/v1/campaigns/"+camp+path, "", nil, "Authorization", "Bearer "+testToken)
	}
	for _, q := range []string{"", "?within=abc", "?within=0s", "?within=800h", "?within=48h&limit=0", "?within=48h&limit=x", "?within=48h&after=zz"} {
		a := adm("/expiring" + q)
		if a.status != 400 {
			t.Errorf("expiring%s: %s; want 400", q, a)
		}
	}
	if a := adm("/expiring?within=48h"); a.status != 200 || !strings.Contains(string(a.body), id) || !strings.Contains(string(a.body), `"user_id":"`+other+`"`) {
		t.Errorf("expiring within 48h: %s; want %s held by %s", a, id, other)
	}
	if a := adm("/report?table=review&format=csv"); a.status != 200 || !strings.HasPrefix(string(a.body), "tier,channel,issued,used,") ||
		!strings.Contains(string(a.body), "\n*,*,1,0,0.0000,0,0,0.00\n") {
		t.Errorf("review CSV: %s", a)
	}
	// Body-less redeem (the original form) still works on a settled voucher.
	if a := post("/redeem", `{"user_id":"`+other+`"}`); a.status != 200 || !strings.Contains(string(a.body), `"state":"redeemed"`) {
		t.Errorf("body-less redeem by the new owner: %s", a)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
