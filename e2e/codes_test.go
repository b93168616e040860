package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// adminText sends a text body (the codes import) to the admin API.
func (s *system) adminText(method, path, body string) (int, []byte) {
	s.t.Helper()
	return s.adminSend(method, path, "text/plain", strings.NewReader(body))
}

// TestCodePoolRaceAcrossSettlerKill: a pool of 1,000 partner codes on a SKU of stock
// 5,000, raced by 5,000 users through a real gateway while the settler is killed -9 and
// restarted mid-sale, hands out exactly 1,000 distinct codes - the imported ones - each
// on exactly one claim row; the other 4,000 are sold_out (an empty pool), and a claim
// after the sale is too. The code is shown to its owner only (GET /v1/claims/{id}), and
// the admin pool counts and expiring list never show a code.
func TestCodePoolRaceAcrossSettlerKill(t *testing.T) {
	s := start(t, opts{})
	bl := s.businessLine(100_000_000)
	camp := s.campaign(bl, 10_000_000, 1, sku{SKU: "gift", Stock: 5000, Value: 10})
	const pool, racers = 1000, 5000
	imported := map[string]bool{}
	var body strings.Builder
	for i := 0; i < pool; i++ {
		c := fmt.Sprintf("PARTNER-%04d-%s", i, camp[len(camp)-6:])
		imported[c] = true
		body.WriteString(c + "\n")
	}
	path := "/admin/v1/campaigns/" + camp + "/skus/gift/codes"
	if code, b := s.adminText("PUT", path, body.String()); code != 200 || !strings.Contains(string(b), `"left":1000`) {
		t.Fatalf("import: %d %s", code, b)
	}

	us := users("pool-"+camp, racers)
	wait, answered := s.sale(camp, "gift", us, 64)
	deadline := time.Now().Add(60 * time.Second)
	for answered.Load() < 600 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.st.Kill() // kill -9 mid-sale: claims accepted meanwhile wait in Kafka and the outbox
	time.Sleep(500 * time.Millisecond)
	s.startSettler()
	answers := wait()
	accepted, reasons, ids := count(answers)
	if accepted != pool || len(ids) != pool || reasons["409 sold_out"] != racers-pool {
		t.Fatalf("accepted %d (distinct ids %d), others %v; want %d accepted and %d sold_out", accepted, len(ids), reasons, pool, racers-pool)
	}
	if n := s.settled(camp, 90*time.Second); n != pool {
		t.Fatalf("%d claim rows, want %d", n, pool)
	}

	ctx := context.Background()
	rows, err := s.pg.Query(ctx, `SELECT claim_id, user_id, coalesce(partner_code, '') FROM claims WHERE campaign_id = $1`, camp)
	if err != nil {
		t.Fatal(err)
	}
	owner, codeOf := map[string]string{}, map[string]string{}
	seen := map[string]bool{}
	for rows.Next() {
		var id, u, c string
		if err := rows.Scan(&id, &u, &c); err != nil {
			t.Fatal(err)
		}
		if !imported[c] || seen[c] || !ids[id] {
			t.Errorf("row %s: code %q (imported %v, seen before %v), answered 200 %v", id, c, imported[c], seen[c], ids[id])
		}
		seen[c] = true
		owner[id], codeOf[id] = u, c
	}
	rows.Close()
	if len(seen) != pool {
		t.Fatalf("%d distinct codes on rows, want %d", len(seen), pool)
	}

	// The pool is empty: another claim is sold_out, and the counts say so.
	if a := s.claimUntilAnswered(claimReq{CampaignID: camp, SKU: "gift", UserID: "late-" + camp, DeviceID: "d-late",
		RequestID: "late-" + camp}, 20*time.Second); a.Status != 409 || a.Reason != "sold_out" {
		t.Errorf("claim after the pool ran out: %d %s %s", a.Status, a.Result, a.Reason)
	}
	code, b := s.adminText("GET", path, "")
	var pc map[string]any
	_ = json.Unmarshal(b, &pc)
	if code != 200 || pc["imported"] != 1000.0 || pc["handed_out"] != 1000.0 || pc["left"] != 0.0 || pc["settled"] != 1000.0 {
		t.Errorf("pool counts: %d %s", code, b)
	}

	// The reveal: the owner sees the code of the row; another user hears 404.
	var id string
	for k := range owner {
		id = k
		break
	}
	get := func(user string) (int, map[string]any) {
		resp, err := s.http.Get(s.public + "/v1/claims/" + id + "?user_id=" + user)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &m)
		if resp.StatusCode != 200 && strings.Contains(string(raw), codeOf[id]) {
			t.Errorf("a non-owner's answer shows the code: %s", raw)
		}
		return resp.StatusCode, m
	}
	if st, m := get(owner[id]); st != 200 || m["code"] != codeOf[id] {
		t.Errorf("owner's GET: %d %v; want code %s", st, m, codeOf[id])
	}
	if st, m := get("someone-else"); st != 404 || m["code"] != nil {
		t.Errorf("other user's GET: %d %v", st, m)
	}
	code, b = s.adminText("GET", "/admin/v1/campaigns/"+camp+"/expiring?within=720h&limit=1000", "")
	if code != 200 || !strings.Contains(string(b), id) {
		t.Errorf("expiring list: %d %.300s", code, b)
	}
	for _, c := range codeOf {
		if strings.Contains(string(b), c) {
			t.Fatalf("the admin expiring list shows code %s", c)
		}
	}
}
