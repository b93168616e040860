package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/flashgate/flashgate/internal/testenv"
)

// TestPointsGrantsEndToEnd: the points routes through a running gateway - a task
// registered (audited, key shown once, bad input 400 naming the field), grants with
// the task's source key (at the ceiling 200, above it 409 grant_ceiling, the same
// grant_id replayed, another body 409 key_reuse, another task's key 403, no key 401,
// bad input 400 naming the field), then GET /v1/me/points for the owner.
func TestPointsGrantsEndToEnd(t *testing.T) {
	g := startGateway(t)
	pg := testenv.PG(t)
	task := testenv.ID(t, "signin")
	path := "/admin/v1/points/tasks/" + task
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"name": "Sign-in", "per_grant_max": 0, "per_user_daily_max": 500, "lifetime": "720h"}, "per_grant_max"},
		{map[string]any{"name": "Sign-in", "per_grant_max": 99, "per_user_daily_max": 500, "lifetime": "soon"}, "lifetime"},
		{map[string]any{"name": "Sign-in", "per_grant_max": 99, "per_user_daily_max": 500, "lifetime": "720h", "key": "x"}, "key"},
	} {
		if a := adminSend(t, g, "PUT", path, tc.body); a.status != 400 || !strings.Contains(a.json(t)["message"].(string), tc.field) {
			t.Errorf("PUT %v: %s, want 400 naming %s", tc.body, a, tc.field)
		}
	}
	if a := adminSend(t, g, "GET", path, nil); a.status != 404 {
		t.Fatalf("task exists after refused PUTs: %s", a)
	}
	a := adminSend(t, g, "PUT", path, map[string]any{"name": "Sign-in", "per_grant_max": 99, "per_user_daily_max": 500, "lifetime": "720h"})
	if a.status != 200 {
		t.Fatalf("PUT task: %s", a)
	}
	key, _ := a.json(t)["key"].(string)
	if !strings.HasPrefix(key, "fgt_") {
		t.Fatalf("no key in %s", a)
	}
	if a := adminSend(t, g, "GET", path, nil); a.status != 200 || strings.Contains(string(a.body), key) || strings.Contains(string(a.body), "key_sha256") {
		t.Fatalf("GET task: %s (never the key)", a)
	}
	var audited int
	if err := pg.QueryRow(context.Background(), `SELECT count(*) FROM risk_audit WHERE action = 'admin.points_task' AND scope = $1
		AND new ->> 'per_grant_max' = '99' AND NOT (new ? 'key_sha256')`, "points_task:"+task).Scan(&audited); err != nil || audited != 1 {
		t.Fatalf("audit rows %d (%v), want 1", audited, err)
	}
	other := testenv.ID(t, "other")
	a = adminSend(t, g, "PUT", "/admin/v1/points/tasks/"+other, map[string]any{"name": "Other", "per_grant_max": 99, "per_user_daily_max": 500, "lifetime": "1h"})
	otherKey, _ := a.json(t)["key"].(string)

	user := testenv.ID(t, "pu")
	grant := func(k string, body any) answer {
		b, _ := json.Marshal(body)
		return send(t, "POST", g.pub+"/v1/points/grants", "application/json", b, "X-Source-Key", k)
	}
	body := func(amount int64, gid string) map[string]any {
		return map[string]any{"user_id": user, "task": task, "amount": amount, "grant_id": gid}
	}
	for _, tc := range []struct {
		key    string
		body   any
		status int
		want   string
	}{
		{key, body(-1, "b1"), 400, "amount"},
		{key, body(1<<40, "b2"), 400, "amount"},
		{key, map[string]any{"user_id": user, "task": task, "amount": "5", "grant_id": "b3"}, 400, "amount"},
		{key, map[string]any{"user_id": "x y", "task": task, "amount": 5, "grant_id": "b4"}, 400, "user_id"},
		{key, map[string]any{"user_id": user, "task": "nope", "amount": 5, "grant_id": "b5"}, 403, "task"},
		{otherKey, body(5, "b6"), 403, "task"},
		{"", body(5, "b7"), 401, "X-Source-Key"},
		{"fgt_guess", body(5, "b8"), 401, "X-Source-Key"},
	} {
		if a := grant(tc.key, tc.body); a.status != tc.status || !strings.Contains(a.json(t)["message"].(string), tc.want) {
			t.Errorf("grant %v: %s, want %d naming %s", tc.body, a, tc.status, tc.want)
		}
	}
	mine := func() map[string]any {
		a := send(t, "GET", g.pub+"/v1/me/points?user_id="+user, "", nil)
		if a.status != 200 {
			t.Fatalf("GET /v1/me/points: %s", a)
		}
		return a.json(t)
	}
	if m := mine(); m["balance"].(float64) != 0 {
		t.Fatalf("bad input changed the balance: %v", m)
	}
	gid := testenv.ID(t, "g")
	first := grant(key, body(99, gid))
	if first.status != 200 {
		t.Fatalf("grant at the ceiling: %s", first)
	}
	// Ten concurrent repeats: the same answer, one lot.
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a := grant(key, body(99, gid)); a.status != 200 || string(a.body) != string(first.body) || a.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("repeat: %s %v, want %s replayed", a, a.header, first)
			}
		}()
	}
	wg.Wait()
	if a := grant(key, body(98, gid)); a.status != 409 || a.json(t)["error"] != "key_reuse" {
		t.Fatalf("another body: %s, want 409 key_reuse", a)
	}
	if a := grant(key, body(9999, testenv.ID(t, "g"))); a.status != 409 || a.json(t)["error"] != "grant_ceiling" {
		t.Fatalf("9999 reported where 99 was due: %s, want 409 grant_ceiling", a)
	}
	m := mine()
	exp, _ := m["expiring"].([]any)
	if m["balance"].(float64) != 99 || m["frozen"] != false || len(exp) != 1 || exp[0].(map[string]any)["remaining"].(float64) != 99 {
		t.Fatalf("GET /v1/me/points: %v, want 99 in one lot", m)
	}
	if a := send(t, "GET", g.pub+"/v1/me/points", "", nil); a.status != 400 || !strings.Contains(a.json(t)["message"].(string), "user_id") {
		t.Fatalf("GET /v1/me/points without a user: %s", a)
	}

	// Freeze through the admin API: 400 without a reason (nothing changed), then
	// audited under the token's name and shown to the owner.
	if a := adminSend(t, g, "POST", "/admin/v1/points/accounts/"+user+"/freeze", map[string]any{}); a.status != 400 ||
		!strings.Contains(a.json(t)["message"].(string), "reason") {
		t.Fatalf("freeze without a reason: %s", a)
	}
	if m := mine(); m["frozen"] != false {
		t.Fatalf("a refused freeze froze: %v", m)
	}
	if a := adminSend(t, g, "POST", "/admin/v1/points/accounts/"+user+"/freeze", map[string]any{"reason": "abnormal gains"}); a.status != 200 {
		t.Fatalf("freeze: %s", a)
	}
	if m := mine(); m["frozen"] != true || m["reason"] != "abnormal gains" {
		t.Fatalf("after freeze: %v", m)
	}
	if err := pg.QueryRow(context.Background(), `SELECT count(*) FROM risk_audit WHERE action = 'points.freeze' AND scope = $1`,
		"points:"+user).Scan(&audited); err != nil || audited != 1 {
		t.Fatalf("freeze audit rows %d (%v), want 1", audited, err)
	}
	if a := adminSend(t, g, "GET", "/admin/v1/points/report", nil); a.status != 200 || !strings.Contains(string(a.body), `"task":"`+task+`","issued":99,"spent":0,"expired":0`) {
		t.Fatalf("report: %s", a)
	}
}
