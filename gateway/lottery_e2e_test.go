package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Issue 17 through the real gateway: a lottery's bad configuration is 400 naming the
// field and changes nothing (no row, no Redis state, no audit row); an odds change is
// audited with old and new weights; GET /v1/campaigns/{id}/odds is public; a claim is a
// draw answered 200 won (claim_id) or no_prize (draw_id), a retry replays it exactly
// (Idempotent-Replayed), and a new request_id of the same user is user_limit.
func TestLotteryEndToEnd(t *testing.T) {
	g := startGateway(t)
	rdb, pg := testenv.Redis(t), testenv.PG(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cat := catalog.New(pg, rdb)
	bl, camp := testenv.ID(t, "bl"), testenv.ID(t, "lot")
	if err := cat.PutBusinessLine(ctx, bl, 1_000_000); err != nil {
		t.Fatal(err)
	}
	starts := time.Now().Add(2 * time.Second)
	body := func(extra, skus string) map[string]any {
		s := fmt.Sprintf(`{"kind":"lottery",%s"name":"turntable","business_line":%q,"starts_at":%q,"ends_at":%q,
			"per_user_limit":1,"budget":100000,"voucher_ttl":"72h","segment":null,"skus":%s}`,
			extra, bl, starts.Format(time.RFC3339Nano), starts.Add(time.Hour).Format(time.RFC3339Nano), skus)
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	path := "/admin/v1/campaigns/" + camp
	for _, tc := range []struct{ extra, skus, field string }{
		{`"no_prize_weight":1,`, `[{"sku":"p","stock":1000,"value":5,"weight":-1}]`, "skus[0].weight"},
		{`"no_prize_weight":0,`, `[{"sku":"p","stock":1000,"value":5,"weight":0}]`, "no_prize_weight"},
		{`"no_prize_weight":1,`, `[{"sku":"p","stock":0,"value":5,"weight":1}]`, "skus[0].stock"},
		{`"no_prize_weight":1,`, `[{"sku":"p","stock":1000,"value":5,"weight":1,"points":5}]`, "skus[0].points"},
		{`"no_prize_weight":1,`, `[{"sku":"p","stock":1000,"value":5,"weight":1,"delivery":{"webhook":"javascript:alert(1)"}}]`, "skus[0].delivery.webhook"},
	} {
		a := adminSend(t, g, "PUT", path, body(tc.extra, tc.skus))
		if a.status != 400 || !strings.Contains(a.json(t)["message"].(string), tc.field) {
			t.Errorf("PUT %s %s: %s; want 400 naming %s", tc.extra, tc.skus, a, tc.field)
		}
	}
	if a := adminSend(t, g, "GET", path, nil); a.status != 404 {
		t.Fatalf("after refused PUTs the campaign exists: %s", a)
	}
	if n, _ := rdb.Exists(ctx, rkeys.Meta(camp)).Result(); n != 0 {
		t.Fatal("a refused PUT warmed Redis")
	}
	audit := func() []any {
		a := adminSend(t, g, "GET", "/admin/v1/audit?since=1h&limit=50&scope=campaign:"+camp, nil)
		rows, _ := a.json(t)["rows"].([]any)
		return rows
	}
	if rows := audit(); len(rows) != 0 {
		t.Fatalf("refused PUTs were audited: %v", rows)
	}

	skus := `[{"sku":"p","stock":1000,"value":5,"weight":1,"delivery":{"webhook":"http://127.0.0.1:9/prizes"}}]`
	if a := adminSend(t, g, "PUT", path, body(`"no_prize_weight":3,`, skus)); a.status != 200 {
		t.Fatalf("PUT lottery: %s", a)
	}
	if a := adminSend(t, g, "PUT", path, body(`"no_prize_weight":1,`, skus)); a.status != 200 {
		t.Fatalf("PUT new odds before the start: %s", a)
	}
	rows := audit()
	if len(rows) != 2 {
		t.Fatalf("audit rows %v, want 2", rows)
	}
	second := rows[1].(map[string]any)
	if second["old"].(map[string]any)["no_prize_weight"] != "3" || second["new"].(map[string]any)["no_prize_weight"] != "1" ||
		!strings.Contains(fmt.Sprint(second["new"].(map[string]any)["skus"]), `"weight": 1`) {
		t.Fatalf("odds change audited as %v", second)
	}
	if err := rdb.HSet(ctx, rkeys.RiskRules(camp), "device.max", 0, "ip.max", 0, "user.max", 0, "freeze.max", 0, "shadow", 0).Err(); err != nil {
		t.Fatal(err)
	}

	// The odds in force, public.
	a := send(t, "GET", g.pub+"/v1/campaigns/"+camp+"/odds", "", nil)
	if a.status != 200 {
		t.Fatalf("GET odds: %s", a)
	}
	var o struct {
		Version string `json:"odds_version"`
		Total   int64  `json:"total_weight"`
		NoPrize struct {
			Probability float64 `json:"probability"`
		} `json:"no_prize"`
		Prizes []struct {
			SKU         string  `json:"sku"`
			InStock     bool    `json:"in_stock"`
			Probability float64 `json:"probability"`
		} `json:"prizes"`
	}
	if err := json.Unmarshal(a.body, &o); err != nil || o.Total != 2 || o.NoPrize.Probability != 0.5 || len(o.Prizes) != 1 ||
		o.Prizes[0].SKU != "p" || !o.Prizes[0].InStock || o.Prizes[0].Probability != 0.5 || len(o.Version) != 16 {
		t.Fatalf("odds %s (%v)", a.body, err)
	}
	if a := send(t, "GET", g.pub+"/v1/campaigns/"+camp+"-nope/odds", "", nil); a.status != 404 {
		t.Fatalf("odds of an unknown campaign: %s", a)
	}

	waitStart(t, rdb, camp)
	c := newClaimant(t, g)
	won, none := 0, 0
	for i := 0; i < 24; i++ {
		user, rq := fmt.Sprintf("u-%d", i), testenv.ID(t, "rq")
		first := c.claimUntilAnswered(camp, "anything", user, "d-"+user, rq)
		if first.status != 200 {
			t.Fatalf("draw %d: %s", i, first)
		}
		m := first.json(t)
		switch m["result"] {
		case "won":
			won++
			if m["sku"] != "p" || m["value"] != 5.0 || !claimIDPattern.MatchString(m["claim_id"].(string)) {
				t.Fatalf("won: %s", first)
			}
			v := send(t, "GET", g.pub+"/v1/claims/"+m["claim_id"].(string)+"?user_id="+user, "", nil)
			if v.status != 200 {
				t.Fatalf("GET the prize's claim: %s", v)
			}
		case "no_prize":
			none++
			if !claimIDPattern.MatchString(m["draw_id"].(string)) || m["claim_id"] != nil || m["campaign_id"] != camp {
				t.Fatalf("no prize: %s", first)
			}
		default:
			t.Fatalf("draw %d: %s", i, first)
		}
		again := c.claimUntilAnswered(camp, "other-sku", user, "d-"+user, rq)
		if again.status != 200 || string(again.body) != string(first.body) || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry of %s: %s (replayed %q); first %s", rq, again, again.header.Get("Idempotent-Replayed"), first)
		}
		if reuse := c.claimUntilAnswered(camp, "anything", user, "d-other", rq); reuse.status != 422 {
			t.Fatalf("same request_id from another device: %s, want 422", reuse)
		}
		if next := c.claimUntilAnswered(camp, "anything", user, "d-"+user, testenv.ID(t, "rq")); next.status != 409 ||
			next.json(t)["reason"] != "user_limit" {
			t.Fatalf("a second draw of %s: %s, want 409 user_limit", user, next)
		}
	}
	if won == 0 || none == 0 {
		t.Fatalf("24 draws at 1:1: %d won, %d no prize (both expected; p of not 2^-23)", won, none)
	}
	if taken, _ := rdb.HGet(ctx, rkeys.SKU(camp, "p"), "taken").Int(); taken != won {
		t.Fatalf("prize taken %d, %d won", taken, won)
	}
}
