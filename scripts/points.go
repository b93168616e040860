package scripts

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

//go:embed unhold.lua
var unholdSrc string

// Unhold removes a points_item claim's holds-index entry if it is still the caller's
// attempt's (unhold.lua).
var Unhold = redis.NewScript(unholdSrc)
