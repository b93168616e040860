package claimer_test

import (
	"math/bits"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Issue 14: two claims in a row on one gateway shared 25 of their 26 random
// characters. 60 claims accepted by one claimer (one process), against the real Redis
// and broker, must have ids that share nothing beyond the campaign: the longest common
// prefix of any two random parts stays what chance gives (5 bits a character: among
// 1770 pairs, a common prefix of 4 characters has probability ~1.6e-3; the old ids
// shared 25), and bit for bit the parts differ in about half their 130 bits.
func TestClaimIDsShareNothingBeyondTheCampaign(t *testing.T) {
	e := newEnv(t)
	c := e.claimer()
	cmp := e.campaign("", campaignSpec{start: -1e9, limit: 100, skus: `[{"sku":"rp-50","stock":100,"value":1}]`})
	var ids []string
	for i := range 60 {
		r := req(cmp, "rp-50", "u-ids", testenv.ID(t, "rq"))
		r.DeviceID = "d-" + strings.Repeat("x", i%3+1)
		if err := e.do(c, r); err != nil {
			t.Fatal(err)
		}
		if r.Code != claim.CodeAccepted {
			t.Fatalf("claim %d: %s", i, reason(r.Code))
		}
		ids = append(ids, r.ClaimID)
	}
	rnd := make([]string, len(ids))
	for i, id := range ids {
		if claimer.CampaignOfClaim(id) != cmp {
			t.Fatalf("id %q: campaign part %q, want %q", id, claimer.CampaignOfClaim(id), cmp)
		}
		rnd[i] = id[len(cmp)+1:]
		if len(rnd[i]) != 26 {
			t.Fatalf("id %q: random part of %d characters, want 26", id, len(rnd[i]))
		}
	}
	longest, minDiff := 0, 1<<30
	for i := range rnd {
		for j := i + 1; j < len(rnd); j++ {
			p := 0
			for p < len(rnd[i]) && rnd[i][p] == rnd[j][p] {
				p++
			}
			longest = max(longest, p)
			d := 0
			for k := range rnd[i] {
				d += bits.OnesCount8(val(rnd[i][k]) ^ val(rnd[j][k]))
			}
			minDiff = min(minDiff, d)
		}
	}
	t.Logf("60 ids: longest common random prefix %d characters, fewest differing bits %d of 130", longest, minDiff)
	if longest >= 4 {
		t.Errorf("two of 60 ids share %d leading random characters; chance gives that with p < 2e-3 (ids %v)", longest, rnd)
	}
	// Two random 130-bit strings differ in 65 ± 5.7 bits; below 30 among 1770 pairs is
	// below 1e-8 by chance.
	if minDiff < 30 {
		t.Errorf("two of 60 ids differ in only %d of 130 bits", minDiff)
	}
}

func val(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'a' + 10
}

func TestNewClaimIDFormat(t *testing.T) {
	id := claimer.NewClaimID("cny-2027")
	if !strings.HasPrefix(id, "cny-2027.") || claimer.CampaignOfClaim(id) != "cny-2027" {
		t.Fatalf("NewClaimID: %q", id)
	}
	for _, ch := range id[len("cny-2027."):] {
		if !strings.ContainsRune("0123456789abcdefghijklmnopqrstuv", ch) {
			t.Fatalf("NewClaimID: %q has %q outside the id alphabet", id, ch)
		}
	}
}
