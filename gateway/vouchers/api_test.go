package vouchers

import "github.com/flashgate/flashgate/gateway/api"

// The adapters implement the public API's interfaces; checked here, in a test, so the
// package itself does not import the HTTP package (DESIGN.md "Layers").
var (
	_ api.Vouchers    = (*Store)(nil)
	_ api.PendingMine = (*PendingScan)(nil)
	_ api.Blocker     = (*Blocks)(nil)
	_ api.Draws       = (*Draws)(nil)
)
