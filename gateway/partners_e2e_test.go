package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/testenv"
)

func adminSend(t *testing.T, g *gateway, method, path string, body any) answer {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	return send(t, method, g.adm+path, "application/json", b, "Authorization", "Bearer "+testToken)
}

// partnerClaim makes one claim with X-Partner-Key, retrying while it is answered 503
// (a retry while the first attempt is made durable).
func (c *claimant) partnerClaim(key, campaign, sku, user, requestID string) answer {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"campaign_id": campaign, "sku": sku, "user_id": user,
		"device_id": "d-" + user, "request_id": requestID})
	deadline := time.Now().Add(15 * time.Second)
	for {
		a := send(c.t, "POST", c.g.pub+"/v1/claims", "application/json", body, "X-Forwarded-For", c.xff, "X-Partner-Key", key)
		if a.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPartnerClaims is the partner bullet of issue 14 end to end: registration with
// bad input refused (nothing stored), a key shown once, 20 claims against a quota of 5
// (exactly 5 accepted, stock and budget moved by those only), users namespaced
// "<partner>:<user>", an unknown key 401, the partner key refused by the admin API and
// by the voucher routes, key rotation, a raised quota taking effect, and after
// settlement the channel in claims.channel and the report's per-channel counts.
func TestPartnerClaims(t *testing.T) {
	g := startGateway(t)
	camp, _, rdb, pg := setupCampaign(t, `[{"sku":"rp-50","stock":100,"value":50}]`)
	settler := testenv.StartSettler(t, rdb, pg, camp)
	pid := strings.ReplaceAll(testenv.ID(t, "acme"), "-", "_")
	path := "/admin/v1/partners/" + pid

	// Bad input: 400 naming the field, and nothing stored.
	for _, tc := range []struct {
		path  string
		body  any
		field string
	}{
		{path, map[string]any{"quotas": map[string]int{camp: 5}}, "name"},
		{path, map[string]any{"name": "Acme", "quotas": map[string]int{camp: -1}}, "quotas." + camp},
		{path, map[string]any{"name": "Acme", "quotas": map[string]int{camp + "-nope": 5}}, "quotas." + camp + "-nope"},
		{path, map[string]any{"name": "Acme", "quotas": map[string]int{"bad{id}": 5}}, "quotas.bad{id}"},
		{path, map[string]any{"name": "Acme", "key": "mine"}, "key"},
		{path, map[string]any{"name": "Acme", "quotas": map[string]string{camp: "5"}}, "quotas: must be"},
		{"/admin/v1/partners/a:b", map[string]any{"name": "Acme"}, "id"},
	} {
		a := adminSend(t, g, "PUT", tc.path, tc.body)
		if a.status != 400 || !strings.Contains(a.json(t)["message"].(string), tc.field) {
			t.Errorf("PUT %s %v: %s; want 400 naming %s", tc.path, tc.body, a, tc.field)
		}
	}
	if a := adminSend(t, g, "GET", path, nil); a.status != 404 {
		t.Fatalf("after refused PUTs the partner exists: %s", a)
	}

	put := adminSend(t, g, "PUT", path, map[string]any{"name": "Acme", "quotas": map[string]int{camp: 5}})
	var created catalog.PartnerPutResult
	if put.status != 200 || json.Unmarshal(put.body, &created) != nil {
		t.Fatalf("PUT partner: %s", put)
	}
	key := created.Key
	if !created.Created || !created.Warmed || !strings.HasPrefix(key, catalog.PartnerKeyPrefix) || len(key) < 40 ||
		created.Channel != "partner:"+pid || created.Quotas[camp] != 5 || put.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("PUT partner: %s (Cache-Control %q)", put, put.header.Get("Cache-Control"))
	}
	for _, p := range []string{"/admin/v1/partners", path} {
		a := adminSend(t, g, "GET", p, nil)
		if a.status != 200 || bytes.Contains(a.body, []byte(key)) || bytes.Contains(a.body, []byte(`"key"`)) || !bytes.Contains(a.body, []byte(pid)) {
			t.Errorf("GET %s: %s; want the partner without its key", p, a)
		}
	}

	waitStart(t, rdb, camp)
	c := newClaimant(t, g)
	// 20 claims for 20 of the partner's users against a quota of 5.
	var ok, quota int
	for i := 0; i < 20; i++ {
		user := "u" + strconv.Itoa(i)
		if i == 0 {
			user = "bob"
		}
		a := c.partnerClaim(key, camp, "rp-50", user, testenv.ID(t, "rq"))
		switch {
		case a.status == 200 && a.json(t)["user_id"] == pid+":"+user:
			ok++
		case a.status == 409 && string(a.body) == `{"result":"rejected","reason":"partner_quota"}`:
			quota++
		default:
			t.Fatalf("partner claim %d: %s", i, a)
		}
	}
	if ok != 5 || quota != 15 {
		t.Fatalf("partner claims: %d accepted, %d partner_quota; want 5 and 15", ok, quota)
	}
	fig := adminSend(t, g, "GET", "/admin/v1/campaigns/"+camp, nil)
	var f catalog.Figures
	if fig.status != 200 || json.Unmarshal(fig.body, &f) != nil {
		t.Fatalf("figures: %s", fig)
	}
	if f.Accepted != 5 || f.BudgetSpent != 250 || f.SKUs[0].StockLeft != 95 || f.Rejections["partner_quota"] != 15 {
		t.Errorf("figures %+v; want 5 accepted, 250 spent, 95 left, 15 partner_quota", f)
	}
	var shown catalog.Partner
	if a := adminSend(t, g, "GET", path, nil); a.status != 200 || json.Unmarshal(a.body, &shown) != nil || shown.Taken[camp] != 5 {
		t.Errorf("GET partner: %s; want taken 5", a)
	}

	// Namespaced users: the partner's "bob" is not the app's "bob" (per-user limit 1,
	// both accepted), and an app claim cannot name a partner's user.
	if a := c.claimUntilAnswered(camp, "rp-50", "bob", "d-app-bob", testenv.ID(t, "rq")); a.status != 200 || a.json(t)["user_id"] != "bob" {
		t.Errorf("app user bob after partner user bob: %s; want 200", a)
	}
	if a := c.claim(camp, "rp-50", pid+":bob", "d-app-bob", testenv.ID(t, "rq")); a.status != 400 || !strings.Contains(a.json(t)["message"].(string), "user_id") {
		t.Errorf("app claim as the partner's user: %s; want 400 naming user_id", a)
	}

	// Keys that are not a partner's.
	for _, k := range []string{"fgp_" + strings.Repeat("A", 43), key + "x", testToken} {
		if a := c.partnerClaim(k, camp, "rp-50", "u-x", testenv.ID(t, "rq")); a.status != 401 || a.json(t)["error"] != "unauthenticated" {
			t.Errorf("claim with key %q: %s; want 401 unauthenticated", k, a)
		}
	}
	// A partner key is not an admin token, and not an end user.
	for _, h := range [][]string{{"Authorization", "Bearer " + key}, {"X-Partner-Key", key}} {
		for _, p := range []string{"/admin/v1/partners", "/admin/v1/campaigns/" + camp} {
			if a := send(t, "GET", g.adm+p, "", nil, h...); a.status != 401 {
				t.Errorf("admin GET %s with the partner key in %s: %s; want 401", p, h[0], a)
			}
		}
		if a := send(t, "PUT", g.adm+path, "application/json", []byte(`{"name":"x","rotate_key":true}`), h...); a.status != 401 {
			t.Errorf("admin PUT with the partner key in %s: %s; want 401", h[0], a)
		}
	}
	anyClaim := camp + ".0000000000000000000000000a"
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/v1/claims/" + anyClaim, ""}, {"POST", "/v1/claims/" + anyClaim + "/redeem", `{"user_id":"bob"}`},
		{"GET", "/v1/me/claims", ""},
	} {
		if a := send(t, r.method, g.pub+r.path, "application/json", []byte(r.body), "X-Partner-Key", key); a.status != 403 {
			t.Errorf("%s %s with a partner key: %s; want 403", r.method, r.path, a)
		}
	}

	// Rotation: the old key stops at once on this gateway; quotas are kept.
	rot := adminSend(t, g, "PUT", path, map[string]any{"name": "Acme Corp", "rotate_key": true})
	var rotated catalog.PartnerPutResult
	if rot.status != 200 || json.Unmarshal(rot.body, &rotated) != nil || rotated.Created || rotated.Key == "" || rotated.Key == key ||
		rotated.Quotas[camp] != 5 || rotated.Name != "Acme Corp" {
		t.Fatalf("rotate: %s", rot)
	}
	if a := c.partnerClaim(key, camp, "rp-50", "u-old", testenv.ID(t, "rq")); a.status != 401 {
		t.Errorf("old key after rotation: %s; want 401", a)
	}
	if a := c.partnerClaim(rotated.Key, camp, "rp-50", "u-new", testenv.ID(t, "rq")); a.status != 409 || a.json(t)["reason"] != "partner_quota" {
		t.Errorf("new key, quota used up: %s; want 409 partner_quota", a)
	}
	// A raised quota is in Redis when the PUT returns.
	if a := adminSend(t, g, "PUT", path, map[string]any{"name": "Acme Corp", "quotas": map[string]int{camp: 6}}); a.status != 200 || a.json(t)["key"] != nil {
		t.Fatalf("raise quota: %s; want 200 without a key", a)
	}
	if a := c.partnerClaim(rotated.Key, camp, "rp-50", "u-sixth", testenv.ID(t, "rq")); a.status != 200 {
		t.Errorf("claim after the quota was raised: %s; want 200", a)
	}

	// Settled: the channel is in claims.channel and the report counts per channel.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for settler.Written() < 7 && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	if settler.Written() != 7 {
		t.Fatalf("settled %d claims, want 7 (last error %v)", settler.Written(), settler.Err())
	}
	byChannel := map[string]int{}
	rows, err := pg.Query(ctx, `SELECT channel, user_id FROM claims WHERE campaign_id = $1`, camp)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ch, user string
		if err := rows.Scan(&ch, &user); err != nil {
			t.Fatal(err)
		}
		if (ch == "app") == strings.HasPrefix(user, pid+":") {
			t.Errorf("claim of %s on channel %s", user, ch)
		}
		byChannel[ch]++
	}
	rows.Close()
	if byChannel["partner:"+pid] != 6 || byChannel["app"] != 1 || len(byChannel) != 2 {
		t.Errorf("claims by channel %v; want 6 partner:%s, 1 app", byChannel, pid)
	}
	rep := adminSend(t, g, "GET", "/admin/v1/campaigns/"+camp+"/report", nil)
	var r catalog.Report
	if rep.status != 200 || json.Unmarshal(rep.body, &r) != nil {
		t.Fatalf("report: %s", rep)
	}
	got := map[string]string{}
	for _, row := range r.Channels {
		got[row.Channel] = fmt.Sprintf("issued %d users %d spent %d", row.Issued, row.Users, row.BudgetSpent)
	}
	if len(got) != 2 || got["app"] != "issued 1 users 1 spent 50" || got["partner:"+pid] != "issued 6 users 6 spent 300" {
		t.Errorf("report channels %v; want app 1/1/50 and partner:%s 6/6/300", got, pid)
	}
}
