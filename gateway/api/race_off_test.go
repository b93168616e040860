//go:build !race

package api

// poolAllocs is what sync.Pool may allocate per request: nothing in steady state.
const poolAllocs = 0
