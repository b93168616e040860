package recovery_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestRecoverCodePools: after Redis lost everything, the rebuild writes a SKU's partner
// code pool back as the codes imported (sku_codes) minus the codes of claim rows, the
// set of every code as the codes imported, and the SKU's pool flag - before the fence is
// lifted - so no code is lost and none is handed out twice.
func TestRecoverCodePools(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	pr := startPrivateRedis(t)
	e := base.With(pr.client())
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 8, Value: 50}, {SKU: "rp-9", Stock: 8, Value: 9}}})
	st := testenv.NewSettler(t, e.RDB, e.PG, c.ID)
	for i := 0; i < 3; i++ {
		try(t, e.RDB, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 3 {
		t.Fatalf("outbox %d, %v", len(recs), err)
	}
	var codes []string
	for i := 0; i < 6; i++ {
		codes = append(codes, fmt.Sprintf("CODE-%d", i))
	}
	if _, err := e.Cat.PutCodes(ctx, c.ID, "rp-50", []byte(strings.Join(codes, "\n"))); err != nil {
		t.Fatal(err)
	}
	// Two claims are rows holding codes 0 and 1; the third was only in Redis (lost).
	recs[0].Code, recs[1].Code = codes[0], codes[1]
	if _, err := testenv.Write(ctx, e.RDB, e.PG, recs[:2], -1, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	st.Start()
	rec := newRecoverer(t, e.RDB, e, c.BusinessLine, &recovery.KafkaCatchUp{Client: adminClient(t), Group: st.Group, Topic: kafkaopt.ClaimsTopic})
	out, err := rec.RecoverBusinessLine(ctx, c.BusinessLine)
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := e.RDB.SMembers(ctx, rkeys.CodePool(c.ID, "rp-50")).Result()
	all, _ := e.RDB.SMembers(ctx, rkeys.CodesAll(c.ID, "rp-50")).Result()
	slices.Sort(pool)
	slices.Sort(all)
	if !slices.Equal(pool, codes[2:]) || !slices.Equal(all, codes) {
		t.Fatalf("rebuilt pool %q (want %q), every code %q (want %q); outcome %+v", pool, codes[2:], all, codes, out)
	}
	if f, _ := e.RDB.HGet(ctx, rkeys.SKU(c.ID, "rp-50"), "pool").Result(); f != "1" {
		t.Errorf("pool flag %q after the rebuild, want 1", f)
	}
	if f, _ := e.RDB.HGet(ctx, rkeys.SKU(c.ID, "rp-9"), "pool").Result(); f != "" {
		t.Errorf("SKU without codes got a pool flag %q", f)
	}
	// A re-import after the rebuild adds nothing: the handed-out codes stay out.
	res, err := e.Cat.PutCodes(ctx, c.ID, "rp-50", []byte(strings.Join(codes, "\n")))
	if err != nil || res.Added != 0 || res.Left != 4 || res.Settled != 2 {
		t.Fatalf("re-import after the rebuild: %+v, %v", res, err)
	}
}
