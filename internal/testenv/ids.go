package testenv

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"testing"
)

// ID returns a fresh id "prefix-<hex>" valid as any flashgate id (at most 64 chars of
// [A-Za-z0-9._:-]), unique across test processes and runs.
func ID(t testing.TB, prefix string) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewClaimID returns a claim id in the gateway's format, "<campaign>.<26 chars>": the
// kit's one claim-id generator.
func NewClaimID(campaign string) string {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic(err)
	}
	return campaign + "." + idEncoding.EncodeToString(raw[:])
}
