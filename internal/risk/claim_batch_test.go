package risk_test

import (
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// sale is one business line (budget 400) with two running campaigns:
//   - A: budget 200, 2 per user, SKUs a1 (stock 3, value 20), a2 (20 × 30), a3 (5 × 10);
//   - B: budget 1000, 1 per user, SKU b1 (10 × 50).
type sale struct{ bl, a, b string }

func newSale(t *testing.T, e *testenv.Env) sale {
	t.Helper()
	s := sale{bl: e.BusinessLine(400), a: testenv.ID(t, "cmpa"), b: testenv.ID(t, "cmpb")}
	put := func(id string, budget, perUser int64, skus ...testenv.SKU) {
		e.Campaign(testenv.Spec{ID: id, BusinessLine: s.bl, Start: -time.Second, PerUser: perUser, Budget: budget, SKUs: skus})
	}
	put(s.a, 200, 2, testenv.SKU{SKU: "a1", Stock: 3, Value: 20}, testenv.SKU{SKU: "a2", Stock: 20, Value: 30}, testenv.SKU{SKU: "a3", Stock: 5, Value: 10})
	put(s.b, 1000, 1, testenv.SKU{SKU: "b1", Stock: 10, Value: 50})
	return s
}

// counters reads every counter claim.lua keeps for s: stock and taken of each SKU,
// spent and taken of each campaign, the business line's spent, the per-user counts,
// the rejection counts and the outbox lengths - named by role, not by id, so that two
// sales can be compared.
func (s sale) counters(t *testing.T, e *testenv.Env) map[string]string {
	t.Helper()
	ctx := testenv.Ctx(t, 10*time.Second)
	got := map[string]string{}
	// read copies fields of a hash (all of them when none are named).
	read := func(role, key string, fields ...string) {
		h, err := e.RDB.HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		for f, v := range h {
			if len(fields) == 0 || slices.Contains(fields, f) {
				got[role+"."+f] = v
			}
		}
	}
	for role, camp := range map[string]string{"A": s.a, "B": s.b} {
		read(role+".meta", rkeys.Meta(camp), "spent", "taken")
		read(role+".users", rkeys.Users(camp))
		read(role+".rej", rkeys.Rejections(camp))
		n, err := e.RDB.XLen(ctx, rkeys.Outbox(camp)).Result()
		if err != nil {
			t.Fatal(err)
		}
		got[role+".outbox"] = strconv.FormatInt(n, 10)
	}
	for _, sku := range []string{"a1", "a2", "a3"} {
		read("A."+sku, rkeys.SKU(s.a, sku), "stock", "taken")
	}
	read("B.b1", rkeys.SKU(s.b, "b1"), "stock", "taken")
	read("bl", rkeys.BusinessLine(s.bl), "budget", "spent")
	return got
}

// One batch in which several claims take from the same SKU, campaign and business line
// - a second SKU of the campaign, a second campaign of the line - leaves exactly what
// the same claims made one script call each leave, with sold_out, per-user limits and
// both budgets running out in the middle of the batch and cheaper claims still fitting
// after. And the batch reads each counter hash once and writes each accepted claim's
// counters with one HSET a hash: the number of HMGET and HINCRBY it runs is exact.
func TestBatchLeavesWhatSingleCallsLeave(t *testing.T) {
	e := testenv.Private(t)
	batched, single := newSale(t, e), newSale(t, e)
	const (
		acc   = claim.CodeAccepted
		so    = claim.CodeSoldOut
		ul    = claim.CodeUserLimit
		be    = claim.CodeBudgetExhausted
		infl  = claim.CodeInFlight
		spare = "10.7.0.1"
	)
	steps := []struct {
		camp, sku, user string
		req             int // 0: a fresh request id; n: the request id of step n (a retry)
		want            int64
	}{
		{"A", "a1", "u1", 0, acc},  // 1: A spent 20, line 20, a1 left 2
		{"B", "b1", "u1", 0, acc},  // 2: B 50, line 70
		{"A", "a1", "u2", 0, acc},  // 3: A 40, line 90, a1 left 1
		{"A", "a2", "u3", 0, acc},  // 4: A 70, line 120
		{"A", "a1", "u4", 0, acc},  // 5: A 90, line 140, a1 left 0
		{"A", "a1", "u5", 0, so},   // 6
		{"A", "a2", "u1", 0, acc},  // 7: A 120, line 170; u1 has 2 in A
		{"A", "a2", "u1", 0, ul},   // 8
		{"B", "b1", "u1", 0, ul},   // 9: 1 per user in B
		{"B", "b1", "u2", 0, acc},  // 10: B 100, line 220
		{"A", "a2", "u5", 0, acc},  // 11: A 150, line 250
		{"A", "a2", "u3", 4, infl}, // 12: step 4 retried: accepted in this call, not yet durable
		{"A", "a2", "u6", 0, acc},  // 13: A 180, line 280
		{"A", "a2", "u7", 0, be},   // 14: A 180 + 30 > 200
		{"A", "a3", "u7", 0, acc},  // 15: A 190, line 290: a cheaper SKU still fits
		{"B", "b1", "u3", 0, acc},  // 16: B 150, line 340
		{"B", "b1", "u4", 0, acc},  // 17: B 200, line 390
		{"B", "b1", "u5", 0, be},   // 18: line 390 + 50 > 400 (B's own budget is fine)
		{"A", "a3", "u8", 0, acc},  // 19: A 200, line 400: both budgets exactly spent
		{"A", "a3", "u9", 0, be},   // 20: A 200 + 10 > 200
		{"A", "a1", "u9", 0, so},   // 21
		{"B", "b1", "u6", 0, be},   // 22: the line is spent
	}
	run := testenv.ID(t, "rq")
	claimsOf := func(s sale) []call {
		cs := make([]call, len(steps))
		for i, st := range steps {
			camp := s.a
			if st.camp == "B" {
				camp = s.b
			}
			n := i + 1
			if st.req != 0 {
				n = st.req
			}
			req := run + "-" + strconv.Itoa(n)
			cs[i] = call{camp: camp, bl: s.bl, sku: st.sku, req: req, user: st.user, dev: "dev-" + st.user, ip: spare}
		}
		return cs
	}

	before := e.CommandStats()
	gotBatch := runClaims(t, e, claimsOf(batched))
	cmds := scriptCommands(before, e.CommandStats())
	var gotSingle []int64
	for _, c := range claimsOf(single) {
		gotSingle = append(gotSingle, runClaims(t, e, []call{c})...)
	}
	for i, st := range steps {
		if gotBatch[i] != st.want || gotSingle[i] != st.want {
			t.Errorf("step %d (%s %s %s): batched %s, single calls %s, want %s", i+1, st.camp, st.sku, st.user,
				reason(int(gotBatch[i])), reason(int(gotSingle[i])), reason(int(st.want)))
		}
	}

	b, s := batched.counters(t, e), single.counters(t, e)
	if !reflect.DeepEqual(b, s) {
		t.Errorf("counters after one batch:\n  %v\nafter single calls:\n  %v", b, s)
	}
	// The figures themselves, worked out by hand in the steps above.
	want := map[string]string{
		"A.a1.stock": "0", "A.a1.taken": "3", "A.a2.stock": "16", "A.a2.taken": "4", "A.a3.stock": "3", "A.a3.taken": "2",
		"A.meta.spent": "200", "A.meta.taken": "9", "B.b1.stock": "6", "B.b1.taken": "4",
		"B.meta.spent": "200", "B.meta.taken": "4", "bl.spent": "400", "bl.budget": "400",
		"A.users.u1": "2", "A.users.u2": "1", "A.users.u3": "1", "A.users.u4": "1", "A.users.u5": "1",
		"A.users.u6": "1", "A.users.u7": "1", "A.users.u8": "1",
		"B.users.u1": "1", "B.users.u2": "1", "B.users.u3": "1", "B.users.u4": "1",
		"A.rej.10": "2", "A.rej.11": "2", "A.rej.12": "1", "B.rej.11": "2", "B.rej.12": "1",
		"A.outbox": "9", "B.outbox": "4",
	}
	for k, v := range want {
		if b[k] != v || s[k] != v {
			t.Errorf("%s: batched %q, single calls %q, want %q", k, b[k], s[k], v)
		}
	}
	// Each hash read once in the batch: 2 metas, 4 SKUs, 1 business line, 2 campaign
	// rules hashes + the global one. HINCRBY: one per accepted claim (the user's count)
	// and one per rejection counter touched (A: sold_out, budget, user_limit; B: budget,
	// user_limit). The script before per-call caches ran 3 HMGET per claim and 6
	// HINCRBY per accepted claim + 1 per rejection.
	if cmds["hmget"] != 10 || cmds["hincrby"] != 13+5 {
		t.Errorf("the batch ran %d HMGET and %d HINCRBY, want 10 and 18 (all: %v)", cmds["hmget"], cmds["hincrby"], cmds)
	}
}
