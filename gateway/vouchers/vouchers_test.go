package vouchers

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flashgate/flashgate/gateway/api"
	"github.com/flashgate/flashgate/internal/testenv"
)

// insertClaim writes a claims row the way the settler would, with fresh ids.
func insertClaim(t *testing.T, pg *pgxpool.Pool, user, state string, expiresAt time.Time) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	camp := testenv.ID(t, "vc")
	claimID := camp + ".0123456789abcdefghijklmnop"
	_, err := pg.Exec(ctx, `INSERT INTO claims (claim_id, request_id, campaign_id, business_line, sku, user_id,
		device_id, ip, value, claimed_at, expires_at, state, expired_at, redeemed_at, kafka_partition, kafka_offset)
		VALUES ($1, $2, $3, 'bl', 'rp-50', $4, 'd-1', '127.0.0.1', 50, now() - interval '1 minute', $5, $6,
		CASE WHEN $6 = 'expired' THEN now() END, CASE WHEN $6 = 'redeemed' THEN now() END, 0, 0)`,
		claimID, testenv.ID(t, "rq"), camp, user, expiresAt, state)
	if err != nil {
		t.Fatalf("insert claim: %v", err)
	}
	return claimID
}

func newStore(t *testing.T) (*Store, *pgxpool.Pool) {
	pg := testenv.PG(t)
	s, err := New(pg)
	if err != nil {
		t.Fatal(err)
	}
	return s, pg
}

func TestNewRequiresPool(t *testing.T) {
	if _, err := New(nil); err == nil {
		t.Fatal("New(nil) = nil error, want one")
	}
}

func TestVoucher(t *testing.T) {
	s, pg := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	future := time.Now().Add(72 * time.Hour)
	tests := []struct {
		name      string
		state     string
		expiresAt time.Time
		wantState string
	}{
		{"settled", "settled", future, "settled"},
		{"settled past expiry reads as expired", "settled", time.Now().Add(-time.Minute), "expired"},
		{"expired", "expired", time.Now().Add(-time.Hour), "expired"},
		{"redeemed", "redeemed", future, "redeemed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			user := testenv.ID(t, "u")
			id := insertClaim(t, pg, user, tc.state, tc.expiresAt)
			v, ok, err := s.Voucher(ctx, id)
			if err != nil || !ok {
				t.Fatalf("Voucher(%s) = ok %v, err %v; want a row", id, ok, err)
			}
			if v.State != tc.wantState || v.ClaimID != id || v.UserID != user || v.Value != 50 || v.SKU != "rp-50" {
				t.Errorf("got %+v; want state %s, claim %s, user %s, value 50", v, tc.wantState, id, user)
			}
			if got, want := v.ExpiresAt.Unix(), tc.expiresAt.Unix(); got != want {
				t.Errorf("expires_at %d, want %d", got, want)
			}
			if tc.state == "expired" && v.ExpiredAt.IsZero() {
				t.Errorf("expired_at not reported")
			}
		})
	}
	if _, ok, err := s.Voucher(ctx, testenv.ID(t, "none")+".0123456789abcdefghijklmnop"); ok || err != nil {
		t.Errorf("unknown claim: ok %v err %v; want not found, no error", ok, err)
	}
}

func TestRedeem(t *testing.T) {
	s, pg := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	future := time.Now().Add(72 * time.Hour)
	tests := []struct {
		name      string
		state     string
		expiresAt time.Time
		otherUser bool
		want      int
		wantState string // after the call, in Postgres
	}{
		{"settled is written off", "settled", future, false, api.RedeemOK, "redeemed"},
		{"redeemed again is OK", "redeemed", future, false, api.RedeemOK, "redeemed"},
		{"not the owner", "settled", future, true, api.RedeemNotOwner, "settled"},
		{"not the owner of a redeemed one", "redeemed", future, true, api.RedeemNotOwner, "redeemed"},
		{"past expires_at", "settled", time.Now().Add(-time.Second), false, api.RedeemExpired, "settled"},
		{"state expired", "expired", time.Now().Add(-time.Hour), false, api.RedeemExpired, "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			owner := testenv.ID(t, "u")
			id := insertClaim(t, pg, owner, tc.state, tc.expiresAt)
			caller := owner
			if tc.otherUser {
				caller = testenv.ID(t, "u")
			}
			v, res, err := s.Redeem(ctx, id, caller)
			if err != nil {
				t.Fatalf("Redeem: %v", err)
			}
			if res != tc.want {
				t.Fatalf("Redeem = %d, want %d", res, tc.want)
			}
			if res == api.RedeemOK && (v.State != "redeemed" || v.RedeemedAt.IsZero() || v.ClaimID != id) {
				t.Errorf("OK voucher = %+v; want redeemed with redeemed_at", v)
			}
			if res == api.RedeemNotOwner && v.ClaimID != "" {
				t.Errorf("not-owner answer leaks the voucher: %+v", v)
			}
			var state string
			if err := pg.QueryRow(ctx, `SELECT state FROM claims WHERE claim_id = $1`, id).Scan(&state); err != nil {
				t.Fatal(err)
			}
			if state != tc.wantState {
				t.Errorf("state in Postgres = %s, want %s", state, tc.wantState)
			}
		})
	}
	t.Run("unknown", func(t *testing.T) {
		_, res, err := s.Redeem(ctx, testenv.ID(t, "none")+".0123456789abcdefghijklmnop", "u-1")
		if err != nil || res != api.RedeemUnknown {
			t.Errorf("Redeem(unknown) = %d, %v; want RedeemUnknown", res, err)
		}
	})
}

// TestRedeemRace redeems one voucher from many goroutines at once: every one must get
// RedeemOK with the same redeemed_at (one write-off, the others see it).
func TestRedeemRace(t *testing.T) {
	s, pg := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	owner := testenv.ID(t, "u")
	id := insertClaim(t, pg, owner, "settled", time.Now().Add(time.Hour))
	const n = 12
	var wg sync.WaitGroup
	got := make([]api.Voucher, n)
	res := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { got[i], res[i], errs[i] = s.Redeem(ctx, id, owner) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || res[i] != api.RedeemOK {
			t.Fatalf("redeem %d = %d, %v; want OK", i, res[i], errs[i])
		}
		if !got[i].RedeemedAt.Equal(got[0].RedeemedAt) {
			t.Errorf("redeem %d: redeemed_at %s, redeem 0: %s; want one write-off", i, got[i].RedeemedAt, got[0].RedeemedAt)
		}
	}
	// A second identical call answers the same body.
	v, r, err := s.Redeem(ctx, id, owner)
	if err != nil || r != api.RedeemOK || v != got[0] {
		t.Errorf("redeem again = %+v, %d, %v; want %+v", v, r, err, got[0])
	}
}
