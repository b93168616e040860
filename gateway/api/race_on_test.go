//go:build race

package api

// poolAllocs is what sync.Pool may allocate per request under the race detector, which
// drops pooled items on purpose.
const poolAllocs = 1
