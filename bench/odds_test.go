package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// bench odds reads a lottery's draws from Postgres and tests them against the
// configured odds: draws that follow 9:1 pass (exit 0, the p-value printed with the
// figures), draws at 1:1 against odds of 9:1 are refused (exit 2); a campaign that is
// not a lottery is a usage error.
func TestOddsCommand(t *testing.T) {
	e := testenv.New(t)
	ctx := testenv.Ctx(t, time.Minute)
	mk := func(noPrizePicks, prizePicks, won int) string {
		c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 9, PerUser: 1,
			SKUs: []testenv.SKU{{SKU: "p", Stock: 100000, Value: 3, Weight: 1}}})
		if _, err := e.PG.Exec(ctx, `INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id,
				odds_version, random, pick, outcome, sku, value, drawn_at)
			SELECT $1 || '.' || i, $1, 'rq-' || i, 'u-' || i, 'd', c.odds_version, CASE WHEN i <= $2::int THEN 0 ELSE 9 END,
				CASE WHEN i <= $2::int THEN NULL ELSE 'p' END,
				CASE WHEN i > $2::int AND i <= $2::int + $4::int THEN 'won' ELSE 'no_prize' END,
				CASE WHEN i > $2::int AND i <= $2::int + $4::int THEN 'p' END,
				CASE WHEN i > $2::int AND i <= $2::int + $4::int THEN 3 ELSE 0 END, now()
			FROM generate_series(1, $2::int + $3::int) AS i, campaigns c WHERE c.id = $1`,
			c.ID, noPrizePicks, prizePicks, won); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	fair := mk(9000, 1000, 990)
	var out, errb bytes.Buffer
	if code := dispatch(ctx, []string{"odds", "--campaign", fair}, &out, &errb); code != exitHeld {
		t.Fatalf("fair draws: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"10000 draws, 990 won (win rate 9.9000%)", "value given 2970", "p-value 1 over 10000 draws"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	biased := mk(5000, 5000, 5000)
	out.Reset()
	errb.Reset()
	if code := dispatch(ctx, []string{"odds", "--campaign", biased, "--json"}, &out, &errb); code != exitViolated ||
		!strings.Contains(errb.String(), "do not follow the configured odds") || !strings.Contains(out.String(), `"p_value":0`) {
		t.Fatalf("biased draws: exit %d\n%s%s", code, out.String(), errb.String())
	}
	voucher := e.StockCampaign(5, 1)
	if code := dispatch(ctx, []string{"odds", "--campaign", voucher}, &out, &errb); code != exitUsage {
		t.Fatalf("a voucher campaign: exit %d, want usage", code)
	}
}
