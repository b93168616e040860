package admin_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/admin"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// codesOf is every code Postgres records for the SKU, sorted.
func (e *env) codesOf(t *testing.T, camp, sku string) []string {
	t.Helper()
	rows, err := e.pg.Query(context.Background(), `SELECT code FROM sku_codes WHERE campaign_id = $1 AND sku = $2 ORDER BY code`, camp, sku)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func (e *env) members(t *testing.T, key string) []string {
	t.Helper()
	m, err := e.rdb.SMembers(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// PUT .../skus/{sku}/codes imports codes (deduplicated, appended later), records them in
// Postgres, fills the pool, flags the SKU, is audited with counts only; GET reads the
// counts, never the codes.
func TestCodesImportAppendAndCounts(t *testing.T) {
	e := start(t, admin.Config{Tokens: named(), Audit: testenv.PG(t)})
	alice := []string{"Authorization", "Bearer " + opsToken}
	bl := testenv.ID(t, "bl")
	if r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":1000000}`, alice...); r.status != 200 {
		t.Fatalf("business line: %d %s", r.status, r.body)
	}
	camp := testenv.ID(t, "camp")
	if r := e.doH(t, "PUT", "/admin/v1/campaigns/"+camp, campaignBody(bl, time.Hour, ""), alice...); r.status != 200 {
		t.Fatalf("campaign: %d %s", r.status, r.body)
	}
	path := "/admin/v1/campaigns/" + camp + "/skus/rp-50/codes"

	r := e.doH(t, "PUT", path, "AAA-1\r\nBBB-2\n\nAAA-1\nccc/3+=\n", alice...)
	if r.status != 200 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["received"] != 3.0 || m["new"] != 3.0 || m["added"] != 3.0 || m["imported"] != 3.0 || m["left"] != 3.0 ||
		m["handed_out"] != 0.0 || m["settled"] != 0.0 {
		t.Errorf("first import answer %s", r.body)
	}
	want := []string{"AAA-1", "BBB-2", "ccc/3+="}
	if got := e.codesOf(t, camp, "rp-50"); !slices.Equal(got, want) {
		t.Errorf("postgres codes %q, want %q", got, want)
	}
	if got := e.members(t, rkeys.CodePool(camp, "rp-50")); !slices.Equal(got, want) {
		t.Errorf("pool %q, want %q", got, want)
	}
	if f, _ := e.rdb.HGet(context.Background(), rkeys.SKU(camp, "rp-50"), "pool").Result(); f != "1" {
		t.Errorf("SKU pool flag %q, want 1", f)
	}
	if f, _ := e.rdb.HGet(context.Background(), rkeys.SKU(camp, "rp-100"), "pool").Result(); f != "" {
		t.Errorf("other SKU's pool flag %q, want none", f)
	}

	// Appending: known codes are skipped, new ones added. A code handed out (popped
	// here as claim.lua does) is never put back by a re-import.
	popped, err := e.rdb.SPop(context.Background(), rkeys.CodePool(camp, "rp-50")).Result()
	if err != nil {
		t.Fatal(err)
	}
	r = e.doH(t, "PUT", path, "BBB-2\nAAA-1\nccc/3+=\nDDD-4\n", alice...)
	m = r.json(t)
	if r.status != 200 || m["received"] != 4.0 || m["new"] != 1.0 || m["added"] != 1.0 || m["imported"] != 4.0 ||
		m["left"] != 3.0 || m["handed_out"] != 1.0 {
		t.Errorf("append: %d %s", r.status, r.body)
	}
	if pool := e.members(t, rkeys.CodePool(camp, "rp-50")); slices.Contains(pool, popped) || len(pool) != 3 {
		t.Errorf("pool after re-import %q: the handed out %q came back or a code is missing", pool, popped)
	}

	// A campaign PUT (which rewrites its SKU rows) keeps the codes.
	if r := e.doH(t, "PUT", "/admin/v1/campaigns/"+camp, campaignBody(bl, time.Hour, ""), alice...); r.status != 200 {
		t.Fatalf("campaign again: %d %s", r.status, r.body)
	}
	if got := e.codesOf(t, camp, "rp-50"); len(got) != 4 {
		t.Errorf("codes after a campaign PUT: %q", got)
	}

	r = e.doH(t, "GET", path, "", alice...)
	m = r.json(t)
	if r.status != 200 || m["imported"] != 4.0 || m["left"] != 3.0 || m["handed_out"] != 1.0 || m["sku"] != "rp-50" {
		t.Errorf("GET counts: %d %s", r.status, r.body)
	}
	for _, c := range append(want, "DDD-4") {
		if strings.Contains(r.body, c) {
			t.Errorf("GET counts shows code %s: %s", c, r.body)
		}
	}

	// Audited: two rows, counts only.
	r = e.doH(t, "GET", "/admin/v1/audit?since=1h&scope=codes:"+camp+"/rp-50", "", alice...)
	rows, _ := r.json(t)["rows"].([]any)
	if len(rows) != 2 {
		t.Fatalf("audit rows: %s; want 2", r.body)
	}
	first, second := rows[0].(map[string]any), rows[1].(map[string]any)
	if first["action"] != "admin.codes" || first["actor"] != "ops-alice" || first["old"].(map[string]any)["imported"] != "0" ||
		first["new"].(map[string]any)["imported"] != "3" || second["new"].(map[string]any)["imported"] != "4" {
		t.Errorf("audit rows %s", r.body)
	}
	for _, c := range want {
		if strings.Contains(r.body, c) {
			t.Errorf("audit shows code %s", c)
		}
	}
}

// Bad input is a 400 naming the line or field (413 for a body over the bound) and
// changes nothing: no code in Postgres or Redis, no pool flag, no audit row.
func TestCodesBadInputChangesNothing(t *testing.T) {
	e := start(t, admin.Config{Tokens: named(), Audit: testenv.PG(t)})
	alice := []string{"Authorization", "Bearer " + opsToken}
	bl := testenv.ID(t, "bl")
	if r := e.doH(t, "PUT", "/admin/v1/business-lines/"+bl, `{"budget":1000000}`, alice...); r.status != 200 {
		t.Fatalf("business line: %d %s", r.status, r.body)
	}
	camp := testenv.ID(t, "camp")
	if r := e.doH(t, "PUT", "/admin/v1/campaigns/"+camp, campaignBody(bl, time.Hour, ""), alice...); r.status != 200 {
		t.Fatalf("campaign: %d %s", r.status, r.body)
	}
	path := "/admin/v1/campaigns/" + camp + "/skus/rp-50/codes"
	var many strings.Builder
	for i := 0; i <= catalog.MaxCodesPerPut; i++ {
		fmt.Fprintf(&many, "C%d\n", i)
	}
	huge := strings.Repeat(strings.Repeat("x", 63)+"\n", catalog.MaxCodesBody/64+1)
	for _, tc := range []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"empty", path, "", 400, "codes: no code"},
		{"blank lines", path, "\n\r\n\n", 400, "codes: no code"},
		{"space in a code", path, "GOOD-1\nBAD 2\n", 400, "codes[line 2]"},
		{"quote", path, "GOOD-1\nGOOD-2\n\"x\"\n", 400, "codes[line 3]"},
		{"too long", path, "GOOD-1\n" + strings.Repeat("y", catalog.MaxCodeLen+1) + "\n", 400, "codes[line 2]"},
		{"non-ascii", path, "caf\xc3\xa9\n", 400, "codes[line 1]"},
		{"too many", path, many.String(), 400, "codes: at most"},
		{"too large", path, huge, 413, "too_large"},
		{"unknown sku", "/admin/v1/campaigns/" + camp + "/skus/nope/codes", "GOOD-1\n", 404, "not_found"},
		{"unknown campaign", "/admin/v1/campaigns/" + testenv.ID(t, "nocamp") + "/skus/rp-50/codes", "GOOD-1\n", 404, "not_found"},
	} {
		r := e.doH(t, "PUT", tc.path, tc.body, alice...)
		if r.status != tc.status || !strings.Contains(r.body, tc.want) {
			t.Errorf("%s: %d %s; want %d naming %q", tc.name, r.status, r.body, tc.status, tc.want)
		}
	}
	if got := e.codesOf(t, camp, "rp-50"); len(got) != 0 {
		t.Errorf("postgres has codes %q after bad imports", got)
	}
	for _, k := range []string{rkeys.CodePool(camp, "rp-50"), rkeys.CodesAll(camp, "rp-50")} {
		if n, _ := e.rdb.Exists(context.Background(), k).Result(); n != 0 {
			t.Errorf("%s exists after bad imports", k)
		}
	}
	if f, _ := e.rdb.HGet(context.Background(), rkeys.SKU(camp, "rp-50"), "pool").Result(); f != "" {
		t.Errorf("pool flag %q after bad imports", f)
	}
	r := e.doH(t, "GET", "/admin/v1/audit?since=1h&scope=codes:"+camp+"/rp-50", "", alice...)
	if rows, _ := r.json(t)["rows"].([]any); len(rows) != 0 {
		t.Errorf("audit rows after bad imports: %s", r.body)
	}
	if r := e.doH(t, "DELETE", path, "", alice...); r.status != 405 {
		t.Errorf("DELETE: %d %s", r.status, r.body)
	}
}
