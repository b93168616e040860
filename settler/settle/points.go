package settle

import (
	"context"

	"github.com/flashgate/flashgate/internal/claim"
)

// PointsConfirmer spends the held points of the points_item claims among claims the
// settler has just written as rows (internal/points.Holds). It handles its own
// failures: the points sweep is the backstop, so it never holds back an offset commit.
type PointsConfirmer interface {
	ConfirmClaims(ctx context.Context, recs []*claim.Record)
}

// confirmPoints hands the batch's written claims to the points confirmer, if any.
func (s *Settler) confirmPoints(ctx context.Context, written []*item) {
	if s.cfg.Points == nil {
		return
	}
	recs := make([]*claim.Record, 0, len(written))
	for _, it := range written {
		if it.refused == nil {
			recs = append(recs, &it.rec)
		}
	}
	if len(recs) > 0 {
		s.cfg.Points.ConfirmClaims(ctx, recs)
	}
}
