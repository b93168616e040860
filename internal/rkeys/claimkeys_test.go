package rkeys

import (
	"slices"
	"testing"

	"github.com/flashgate/flashgate/internal/claim"
)

// ClaimKeys through the codec's builder gives claim.lua's layout: the 9 campaign keys,
// the 14 risk keys, the partner quotas, the push escrows, the SKU's code pool.
func TestClaimKeysInTheClaimLayout(t *testing.T) {
	c, d, ip, u := "camp1", "dev1", "10.0.0.1", "user1"
	k := ClaimKeys(c, "sku1", "rq1", "bl1", "", d, ip, u)
	got, _ := claim.AppendClaim(nil, nil, &k, &claim.Args{})
	want := []string{Meta(c), SKU(c, "sku1"), Request(c, "rq1"), Users(c), BusinessLine("bl1"), Outbox(c),
		Inflight(c), Rejections(c), Meta(c),
		RiskRules(c), RiskGlobalRules, Velocity(c, KindDevice, d), Velocity(c, KindIP, ip), Velocity(c, KindUser, u),
		Block(KindDevice, d), Block(KindIP, ip), Block(KindUser, u), Freeze(KindDevice, d), Freeze(KindUser, u),
		FreezeWindow(KindDevice, d), FreezeWindow(KindUser, u), ShadowRejections(c), RiskIndex, PartnerQuotas(c),
		Pushes(c), CodePool(c, "sku1")}
	if !slices.Equal(got, want) || len(got) != claim.BatchKeysPerClaim {
		t.Fatalf("keys\n got %q\nwant %q", got, want)
	}
	if k := ClaimKeys(c, "s", "r", "b", "seg1", d, ip, u); k.Segment != Segment("seg1") {
		t.Fatalf("segment key %q", k.Segment)
	}
}
