package claimer

import (
	"crypto/rand"
	"encoding/base32"
)

// idEncoding is lower-case base32 (RFC 4648 alphabet order, digits first), no padding:
// 16 random bytes are 26 characters, all of [0-9a-v], valid in a URL path as they are.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// claimIDRandomChars is the length of a claim id's random part (CampaignOfClaim checks it).
const claimIDRandomChars = 26

// NewClaimID returns "<campaign>.<26 chars>": 128 bits from crypto/rand (CONTRACT.md
// "Unguessable vouchers" asks for at least 122), so that no claim id tells anything
// about another - holding one voucher does not lead to the ones issued next to it
// (issue 14: the ids were a per-process prefix and a counter). The campaign stays in
// front so that GET /v1/claims/{id} finds a pending claim's keys in Redis.
//
// Collisions: 2^128 possibilities; a billion ids have a collision probability near
// 1.5e-21, and the settler's INSERT ... ON CONFLICT on claim_id would surface one.
// crypto/rand.Read does not fail on the platforms Go supports (Go 1.24+ crashes the
// process rather than return an error), and it reads the kernel's CSPRNG without a
// system call per id where the kernel offers vDSO getrandom.
func NewClaimID(campaign string) string {
	var raw [16]byte
	_, _ = rand.Read(raw[:])
	buf := make([]byte, 0, len(campaign)+1+claimIDRandomChars)
	buf = append(buf, campaign...)
	buf = append(buf, '.')
	buf = idEncoding.AppendEncode(buf, raw[:])
	return string(buf)
}
