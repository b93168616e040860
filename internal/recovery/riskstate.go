package recovery

import (
	"context"
	"fmt"

	"github.com/flashgate/flashgate/internal/risk/riskstate"
)

// ensureRisk rebuilds Redis's risk state (rules, blocks, lifted freezes) from its record
// in Postgres when the marker claim.lua checks is absent or was written on another Redis
// server (issue 21.4; internal/risk/riskstate). Until it is back every claim of every
// campaign answers NOT_WARM, so it runs first in every pass, whatever business lines the
// Recoverer is confined to: risk state spans campaigns.
func (r *Recoverer) ensureRisk(ctx context.Context, runID string) error {
	rebuilt, res, err := riskstate.Ensure(ctx, r.pg, r.rdb, runID)
	if err != nil {
		r.m.recoveries.WithLabelValues("failed").Inc()
		return fmt.Errorf("rebuild risk state: %w (claims answer 503 until it is rebuilt; the next pass retries)", err)
	}
	if rebuilt {
		r.m.detected.WithLabelValues("risk_state").Inc()
		r.log.Warn("risk state rebuilt from Postgres", "run_id", res.RunID, "rule_levels", res.Rules,
			"blocks", res.Blocks, "lifted", res.Lifted, "freezes_lifted", res.FreezesLifted)
	}
	return nil
}
