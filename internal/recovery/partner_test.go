package recovery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/recovery"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestRecoverPartnerQuotas: after Redis lost everything, the rebuild writes the
// campaign's partner quotas back from the books - each partner's quota, and as taken
// its claims that are rows (channel partner:<id>) - so a partner cannot claim its quota
// a second time after a Redis loss.
func TestRecoverPartnerQuotas(t *testing.T) {
	base := testenv.New(t)
	ctx := testenv.Ctx(t, 90*time.Second)
	pr := startPrivateRedis(t)
	e := base.With(pr.client())
	c := e.Campaign(testenv.Spec{SKUs: []testenv.SKU{{SKU: "rp-50", Stock: 8, Value: 50}}})
	st := testenv.NewSettler(t, e.RDB, e.PG, c.ID)
	pid, other := testenv.ID(t, "p"), testenv.ID(t, "q")
	for p, q := range map[string]int64{pid: 5, other: 1} {
		if _, err := e.Cat.PutPartner(ctx, p, &catalog.PartnerPut{Name: p, Quotas: map[string]int64{c.ID: q}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		try(t, e.RDB, c, "rp-50", fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
	}
	recs, err := testenv.OutboxRecords(ctx, e.RDB, c.ID)
	if err != nil || len(recs) != 4 {
		t.Fatalf("outbox %d, %v", len(recs), err)
	}
	// Two rows of pid, one app row, one of the other partner.
	recs[0].Channel, recs[1].Channel, recs[3].Channel = "partner:"+pid, "partner:"+pid, "partner:"+other
	if _, err := testenv.Write(ctx, e.RDB, e.PG, recs, -1, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	st.Start()
	rec := newRecoverer(t, e.RDB, e, c.BusinessLine, &recovery.KafkaCatchUp{Client: adminClient(t), Group: st.Group, Topic: kafkaopt.ClaimsTopic})
	if _, err := rec.RecoverBusinessLine(ctx, c.BusinessLine); err != nil {
		t.Fatal(err)
	}
	got, err := e.RDB.HGetAll(ctx, rkeys.PartnerQuotas(c.ID)).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{rkeys.PartnerQuotaField(pid): "5", rkeys.PartnerTakenField(pid): "2",
		rkeys.PartnerQuotaField(other): "1", rkeys.PartnerTakenField(other): "1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rebuilt partner quotas %v, want %v", got, want)
	}
}
