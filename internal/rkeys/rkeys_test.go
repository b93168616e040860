package rkeys

import (
	"testing"

	"github.com/flashgate/flashgate/internal/claim"
)

// The claimer builds the risk keys with the Append* functions into one buffer; tools
// and test kits use ClaimKeys. Both must name the same keys in claim.lua's order (KEYS
// 10-23 of a claim), or a tool would measure (or a kit test) another layout than the
// gateway's.
func TestClaimRiskKeysMatchTheClaimLayout(t *testing.T) {
	const c, d, ip, u = "cny-2027", "d-9f2c", "198.18.0.7", "u-1001"
	k := ClaimKeys(c, "s", "r", "b", "", d, ip, u)
	all, _ := claim.AppendClaim(nil, nil, &k, &claim.Args{})
	got := append([]string{"first"}, all[9:23]...)
	want := []string{"first",
		"fg:{cny-2027}:risk", "fg:{risk}:rules",
		string(AppendVelocity(nil, c, KindDevice, d)), string(AppendVelocity(nil, c, KindIP, ip)),
		string(AppendVelocity(nil, c, KindUser, u)),
		string(AppendBlock(nil, KindDevice, d)), string(AppendBlock(nil, KindIP, ip)), string(AppendBlock(nil, KindUser, u)),
		string(AppendFreeze(nil, KindDevice, d)), string(AppendFreeze(nil, KindUser, u)),
		string(AppendFreezeWindow(nil, KindDevice, d)), string(AppendFreezeWindow(nil, KindUser, u)),
		"fg:{cny-2027}:rejshadow", "fg:{risk}:index",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d risk keys; claim.lua takes %d", len(got)-1, len(want)-1)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("key %d: got %q; want %q", i, got[i], want[i])
		}
	}
	if v := Velocity(c, KindDevice, d); v != "fg:{cny-2027}:vd:d-9f2c" || v != got[3] {
		t.Errorf("Velocity = %q; want fg:{cny-2027}:vd:d-9f2c (and equal to the appended form %q)", v, got[3])
	}
	if b := Block(KindIP, ip); b != "fg:{risk}:blk:i:198.18.0.7" || b != got[7] {
		t.Errorf("Block = %q; want fg:{risk}:blk:i:198.18.0.7 (and equal to the appended form %q)", b, got[7])
	}
}
