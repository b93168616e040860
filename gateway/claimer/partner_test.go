package claimer_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
)

// TestPartnerProduceFailureGivesQuotaBack: a partner's claims whose produce fails are
// voided by the claimer, and each void gives its unit back to the partner's quota; with
// a broker the partner then gets exactly its quota.
func TestPartnerProduceFailureGivesQuotaBack(t *testing.T) {
	e := newEnv(t)
	cmp := e.campaign("", campaignSpec{start: -time.Minute, skus: `[{"sku":"rp-50","stock":10,"value":50}]`})
	pid := testenv.ID(t, "p")
	if _, err := e.cat.PutPartner(context.Background(), pid, &catalog.PartnerPut{Name: "p", Quotas: map[string]int64{cmp: 2}}); err != nil {
		t.Fatal(err)
	}
	taken := func() string {
		return e.rdb.HGet(context.Background(), rkeys.PartnerQuotas(cmp), rkeys.PartnerTakenField(pid)).Val()
	}
	preq := func(i int) *claimer.Request {
		r := req(cmp, "rp-50", fmt.Sprintf("%s:u%d", pid, i), fmt.Sprintf("r%d", i))
		r.Channel = "partner:" + pid
		return r
	}
	dead := e.claimerOn([]string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))}, 1500*time.Millisecond)
	for i := range 2 {
		if err := e.do(dead, preq(i)); !errors.Is(err, claimer.ErrUnavailable) {
			t.Fatalf("partner claim %d with no broker: %v, want ErrUnavailable", i, err)
		}
	}
	if got := taken(); got != "0" {
		t.Fatalf("after two voided partner claims taken = %q, want 0", got)
	}
	live := e.claimer()
	for i, want := range []int{claim.CodeAccepted, claim.CodeAccepted, claim.CodePartnerQuota} {
		r := preq(i + 10)
		if err := e.do(live, r); err != nil || r.Code != want {
			t.Fatalf("partner claim %d with a broker: %s, %v; want %s", i, reason(r.Code), err, reason(want))
		}
	}
	if got := taken(); got != "2" {
		t.Errorf("taken = %q, want 2", got)
	}
}
