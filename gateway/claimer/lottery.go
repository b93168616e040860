package claimer

// Lottery draws (DESIGN.md "Lottery"): the gateway's half. A lottery campaign's route
// carries its odds as warmed into the meta (internal/catalog OddsField); each fresh
// decision draws a uniform integer r in [0, total weight) with crypto/rand - never from
// anything the client sends, so no client can predict or steer it - and passes r, the
// odds version and the prize r points at (the SKU key the script may take from) to
// claim.lua, which walks the same odds, checks they agree (STALE when this route's odds
// are behind Redis's) and decides stock and budget atomically. A retry of a request_id
// is replayed by the script from its record: the new r of a retry is never used.

import (
	"crypto/rand"
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/odds"
)

// lotteryOdds is a lottery route's odds.
type lotteryOdds struct {
	version string
	table   odds.Table // every prize InStock: the pick before stock (the script decides stock)
	total   int64
}

// parseOdds reads the meta's odds field ("" or malformed: nil).
func parseOdds(s string) *lotteryOdds {
	f := strings.Split(s, "\t")
	if len(f) < 2 || len(f)%2 != 0 || f[0] == "" {
		return nil
	}
	w0, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || w0 < 0 {
		return nil
	}
	o := &lotteryOdds{version: f[0], table: odds.Table{NoPrize: w0}}
	for j := 2; j < len(f); j += 2 {
		w, err := strconv.ParseInt(f[j+1], 10, 64)
		if err != nil || w < 0 {
			return nil
		}
		o.table.Prizes = append(o.table.Prizes, odds.Prize{SKU: f[j], Weight: w, InStock: true})
	}
	o.total = o.table.Total()
	if o.total <= 0 || o.total > odds.MaxTotal {
		return nil
	}
	return o
}

// uniform returns a uniform integer in [0, n) from crypto/rand (n > 0), without modulo
// bias: draws at or above the largest multiple of n below 2^64 are thrown away (at most
// n/2^64 of them: with n <= 2^40, about one in 16 million).
func uniform(n int64) (int64, error) {
	var b [8]byte
	un := uint64(n)
	limit := ^uint64(0) - ^uint64(0)%un
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		if x := binary.LittleEndian.Uint64(b[:]); x < limit {
			return int64(x % un), nil
		}
	}
}

// draw fills r's lottery inputs for a fresh decision: a new random number, its pick
// as the claim's SKU and the Draw argument.
func (o *lotteryOdds) draw(r *Request) error {
	v, err := uniform(o.total)
	if err != nil {
		return err
	}
	r.DrawR = v
	r.DrawVersion = o.version
	r.SKU = ""
	if i := o.table.Pick(v); i > 0 {
		r.SKU = o.table.Prizes[i-1].SKU
	}
	r.DrawPick = r.SKU
	r.drawArg = string(claim.AppendDrawArg(make([]byte, 0, 40), o.version, v))
	return nil
}
