package relay

import "context"

// Republish runs one pass of the relay over one campaign's outbox and says how many
// entries it published again. It is the relay as internal/reconcile sees it (its
// Republisher), so that the reconciler, which the gateway links too, does not import
// the settler's relay.
func (r *Relay) Republish(ctx context.Context, campaign string) (int, error) {
	st, err := r.Campaign(ctx, campaign)
	return st.Republished, err
}
