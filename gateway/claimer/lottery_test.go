package claimer_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/gateway/claimer"
	"github.com/flashgate/flashgate/gateway/claimer/claimertest"
	"github.com/flashgate/flashgate/internal/claim"
	"github.com/flashgate/flashgate/internal/odds"
	"github.com/flashgate/flashgate/internal/rkeys"
	"github.com/flashgate/flashgate/internal/testenv"
	"github.com/flashgate/flashgate/scripts"
)

// oddsOf reads a lottery's odds version as warmed.
func oddsVersion(t *testing.T, e *testenv.Env, campaign string) string {
	t.Helper()
	o, err := e.RDB.HGet(testenv.Ctx(t, 5*time.Second), rkeys.Meta(campaign), "odds").Result()
	if err != nil {
		t.Fatal(err)
	}
	v, _, _ := strings.Cut(o, "\t")
	return v
}

// drawScript runs claim.lua for one lottery claim with a chosen r and pick (as the
// gateway would send them) and returns its outcome.
func drawScript(t *testing.T, e *testenv.Env, c *testenv.Campaign, reqID, user, pick, drawArg string) claim.Outcome {
	t.Helper()
	k := rkeys.ClaimKeys(c.ID, pick, reqID, c.BusinessLine, "", "d-"+user, "127.0.0.1", user)
	a := claim.Args{RequestID: reqID, ClaimID: testenv.NewClaimID(c.ID), CampaignID: c.ID, SKU: pick,
		UserID: user, DeviceID: "d-" + user, IP: "127.0.0.1", Draw: drawArg}
	keys, args := claim.AppendHeader(nil, nil, 1, (24 * time.Hour).Milliseconds(), time.Hour.Milliseconds())
	keys, args = claim.AppendClaim(keys, args, &k, &a)
	res, err := scripts.Claim.Run(testenv.Ctx(t, 10*time.Second), e.RDB, keys, args...).Slice()
	if err != nil {
		t.Fatalf("claim.lua: %v", err)
	}
	var o claim.Outcome
	claim.DecodeResult(res, 0, &o)
	return o
}

// The draw inside claim.lua is internal/odds' Pick, including the out-of-stock rule and
// a prize the budget cannot cover: every r in [0, total) is drawn with the stock and
// budget at three moments, and each outcome is what odds.Table.Pick says under the
// stock left at that moment.
func TestLotteryDrawMirrorsOdds(t *testing.T) {
	e := testenv.New(t)
	// total 10: no prize [0,5), a [5,8), b [8,10). a: one unit; the budget covers a
	// and one b, not two b.
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 5, PerUser: 1000, Budget: 115,
		SKUs: []testenv.SKU{{SKU: "a", Stock: 1, Value: 100, Weight: 3}, {SKU: "b", Stock: 100, Value: 10, Weight: 2}}})
	ver := oddsVersion(t, e, c.ID)
	table := odds.Table{NoPrize: 5, Prizes: []odds.Prize{{SKU: "a", Weight: 3, InStock: true}, {SKU: "b", Weight: 2, InStock: true}}}
	// The pick before stock: what the gateway sends (its own Prizes: table's change).
	configured := odds.Table{NoPrize: 5, Prizes: []odds.Prize{{SKU: "a", Weight: 3, InStock: true}, {SKU: "b", Weight: 2, InStock: true}}}
	n := 0
	round := func(inStock map[string]bool, label string) {
		for r := int64(0); r < table.Total(); r++ {
			for i := range table.Prizes {
				table.Prizes[i].InStock = inStock[table.Prizes[i].SKU]
			}
			want := table.Pick(r)
			pick := ""
			if i := configured.Pick(r); i > 0 {
				pick = configured.Prizes[i-1].SKU
			}
			n++
			o := drawScript(t, e, c, fmt.Sprintf("rq-%d", n), fmt.Sprintf("u-%d", n), pick, claim.AppendDrawArgString(ver, r))
			got := 0
			switch o.Code {
			case claim.CodeNoPrize:
			case claim.CodeAccepted:
				for i, p := range table.Prizes {
					if p.SKU == o.Prize {
						got = 1 + i
					}
				}
				if got == 0 || o.ClaimID == "" {
					t.Fatalf("%s r=%d: accepted with prize %q claim %q", label, r, o.Prize, o.ClaimID)
				}
			default:
				t.Fatalf("%s r=%d: code %s", label, r, claim.ReasonOf(o.Code))
			}
			if got != want {
				t.Errorf("%s r=%d: claim.lua drew %d, odds.Pick %d", label, r, got, want)
			}
			if o.Code == claim.CodeAccepted && o.Prize == "a" {
				inStock["a"] = false // its one unit is gone from here on
			}
			if o.Code == claim.CodeAccepted && o.Prize == "b" && inStock["a"] == false {
				inStock["b"] = false // spent 110 of 115: the next b (10) cannot be covered
			}
		}
	}
	// Round 1: a is won at r=5 (and then out of stock for r=6,7), b at r=8 (and then out
	// of budget for r=9).
	round(map[string]bool{"a": true, "b": true}, "in stock")
	// Round 2: nothing left to win.
	round(map[string]bool{"a": false, "b": false}, "out of stock and budget")
	h, _ := e.RDB.HMGet(testenv.Ctx(t, 5*time.Second), rkeys.SKU(c.ID, "a"), "stock", "taken").Result()
	if h[0] != "0" || h[1] != "1" {
		t.Fatalf("prize a stock/taken %v, want 0/1", h)
	}
	uc, _ := e.RDB.HLen(testenv.Ctx(t, 5*time.Second), rkeys.Users(c.ID)).Result()
	if uc != int64(n) {
		t.Fatalf("%d users counted, want every one of the %d draws", uc, n)
	}
	// Odds the script does not hold, or a pick that is not r's, are STALE (nothing taken).
	if o := drawScript(t, e, c, "rq-stale1", "u-stale", "", claim.AppendDrawArgString("0000000000000000", 1)); o.Code != claim.CodeStale {
		t.Fatalf("another odds version: %s, want stale", claim.ReasonOf(o.Code))
	}
	if o := drawScript(t, e, c, "rq-stale2", "u-stale", "b", claim.AppendDrawArgString(ver, 1)); o.Code != claim.CodeStale {
		t.Fatalf("a pick that is not r's: %s, want stale", claim.ReasonOf(o.Code))
	}
	if o := drawScript(t, e, c, "rq-stale3", "u-stale", "", claim.AppendDrawArgString(ver, 10)); o.Code != claim.CodeStale {
		t.Fatalf("r beyond the total: %s, want stale", claim.ReasonOf(o.Code))
	}
	if v, _ := e.RDB.HGet(testenv.Ctx(t, 5*time.Second), rkeys.Users(c.ID), "u-stale").Result(); v != "" {
		t.Fatalf("a stale draw counted the user (%q)", v)
	}
}

func lotteryReq(campaign, user, reqID string) *claimer.Request {
	return &claimer.Request{RequestID: reqID, CampaignID: campaign, SKU: "ignored", UserID: user,
		DeviceID: "d-" + user, IP: "10.1.0.1"}
}

// A retry of a request_id keeps its outcome - the prize it won or its no-prize with the
// same draw_id - whatever the retry's own random number; a new request_id is a new draw
// and counts against per_user_limit.
func TestLotteryRetryKeepsOutcome(t *testing.T) {
	e := testenv.New(t)
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 1, PerUser: 1,
		SKUs: []testenv.SKU{{SKU: "p", Stock: 1000, Value: 5, Weight: 1}}})
	cl := claimertest.New(e, nil)
	ctx := testenv.Ctx(t, 60*time.Second)
	won, none := 0, 0
	for i := 0; i < 40; i++ {
		user, rq := fmt.Sprintf("u-%d", i), testenv.ID(t, "rq")
		first := lotteryReq(c.ID, user, rq)
		if err := cl.Do(ctx, first); err != nil {
			t.Fatal(err)
		}
		switch first.Code {
		case claim.CodeAccepted:
			won++
			if first.SKU != "p" || !first.Lottery || first.Value != 5 {
				t.Fatalf("won: sku %q lottery %v value %d", first.SKU, first.Lottery, first.Value)
			}
		case claim.CodeNoPrize:
			none++
			if first.SKU != "" || first.ClaimID == "" {
				t.Fatalf("no prize: sku %q draw_id %q", first.SKU, first.ClaimID)
			}
		default:
			t.Fatalf("draw %d: %s", i, claim.ReasonOf(first.Code))
		}
		for j := 0; j < 3; j++ {
			again := lotteryReq(c.ID, user, rq)
			if err := cl.Do(ctx, again); err != nil {
				t.Fatal(err)
			}
			if again.Code != first.Code || again.ClaimID != first.ClaimID || again.SKU != first.SKU || !again.Replayed {
				t.Fatalf("retry %d of %s: %s %q %q replayed %v; first %s %q %q", j, rq, claim.ReasonOf(again.Code),
					again.ClaimID, again.SKU, again.Replayed, claim.ReasonOf(first.Code), first.ClaimID, first.SKU)
			}
		}
		next := lotteryReq(c.ID, user, testenv.ID(t, "rq"))
		if err := cl.Do(ctx, next); err != nil {
			t.Fatal(err)
		}
		if next.Code != claim.CodeUserLimit {
			t.Fatalf("a second draw by %s (limit 1): %s, want user_limit", user, claim.ReasonOf(next.Code))
		}
	}
	if won == 0 || none == 0 {
		t.Fatalf("40 draws at 1:1 gave %d won, %d no prize: both should occur (p of not: 2^-39)", won, none)
	}
	h, _ := e.RDB.HGet(ctx, rkeys.SKU(c.ID, "p"), "taken").Result()
	if h != strconv.Itoa(won) {
		t.Fatalf("prize taken %s, want %d", h, won)
	}
}

// The race of the issue: a 1-in-1,000 prize of stock 5 raced by 20,000 draws never
// gives more than 5; every other draw is no_prize, each made durable (an outbox entry
// per draw until settled).
func TestLotteryRaceNeverMoreThanStock(t *testing.T) {
	e := testenv.Private(t) // 20,000 outbox entries stay off the shared Redis
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 999, PerUser: 1, End: time.Hour,
		SKUs: []testenv.SKU{{SKU: "phone", Stock: 5, Value: 5000, Weight: 1}}})
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	ctx := testenv.Ctx(t, 5*time.Minute)
	const draws = 20_000
	var mu sync.Mutex
	codes := map[int]int{}
	ids := map[string]bool{}
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := lotteryReq(c.ID, fmt.Sprintf("u-%d", i), fmt.Sprintf("rq-%d", i))
				err := cl.Do(ctx, r)
				mu.Lock()
				if err != nil {
					codes[-1]++
				} else {
					codes[r.Code]++
					ids[r.ClaimID] = true
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < draws; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if codes[claim.CodeAccepted] > 5 || codes[claim.CodeAccepted]+codes[claim.CodeNoPrize] != draws || len(ids) != draws {
		t.Fatalf("outcomes %v, %d distinct ids: want at most 5 won and the rest no_prize, one id each", codes, len(ids))
	}
	h, _ := e.RDB.HMGet(ctx, rkeys.SKU(c.ID, "phone"), "stock", "taken").Result()
	if h[1] != strconv.Itoa(codes[claim.CodeAccepted]) || h[0] != strconv.Itoa(5-codes[claim.CodeAccepted]) {
		t.Fatalf("Redis stock/taken %v after %d won", h, codes[claim.CodeAccepted])
	}
	n, _ := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result()
	if n != draws {
		t.Fatalf("outbox holds %d entries, want one per draw (%d)", n, draws)
	}
	t.Logf("20,000 draws at 1:1000, stock 5: %d won, %d no prize", codes[claim.CodeAccepted], codes[claim.CodeNoPrize])
}

// While recovery fences the business line (its budget field removed), a draw is refused
// NOT_WARM whatever it drew, the no-prize band included, and takes nothing: no per-user
// count, no outbox entry, no record. Lifting the fence lets the same request_id draw.
func TestLotteryFencedLineRefusesNoPrize(t *testing.T) {
	e := testenv.New(t)
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 1, PerUser: 5,
		SKUs: []testenv.SKU{{SKU: "p", Stock: 3, Value: 5, Weight: 0}}})
	ver := oddsVersion(t, e, c.ID)
	ctx := testenv.Ctx(t, 5*time.Second)
	bl := rkeys.BusinessLine(c.BusinessLine)
	budget, err := e.RDB.HGet(ctx, bl, "budget").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := e.RDB.HDel(ctx, bl, "budget").Err(); err != nil {
		t.Fatal(err)
	}
	o := drawScript(t, e, c, "rq-f", "u-f", "", claim.AppendDrawArgString(ver, 0))
	if o.Code != claim.CodeNotWarm {
		t.Fatalf("no-prize draw on a fenced line: %s, want NOT_WARM", claim.ReasonOf(o.Code))
	}
	if v := e.RDB.HGet(ctx, rkeys.Users(c.ID), "u-f").Val(); v != "" {
		t.Errorf("per-user count %q after a refused draw, want none", v)
	}
	if n := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Val(); n != 0 {
		t.Errorf("outbox %d after a refused draw, want 0", n)
	}
	if n := e.RDB.Exists(ctx, rkeys.Request(c.ID, "rq-f")).Val(); n != 0 {
		t.Error("a refused draw left an idempotency record")
	}
	if err := e.RDB.HSet(ctx, bl, "budget", budget).Err(); err != nil {
		t.Fatal(err)
	}
	if o := drawScript(t, e, c, "rq-f", "u-f", "", claim.AppendDrawArgString(ver, 0)); o.Code != claim.CodeNoPrize {
		t.Fatalf("the same draw once unfenced: %s, want NO_PRIZE", claim.ReasonOf(o.Code))
	}
}

// A draw that won nothing and whose produce failed is voided: void.lua gives back the
// user's count and its outbox entry only.
func TestLotteryNoPrizeVoid(t *testing.T) {
	e := testenv.New(t)
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 1, PerUser: 5,
		SKUs: []testenv.SKU{{SKU: "p", Stock: 3, Value: 5, Weight: 0}}})
	ver := oddsVersion(t, e, c.ID)
	o := drawScript(t, e, c, "rq-v", "u-v", "", claim.AppendDrawArgString(ver, 0))
	if o.Code != claim.CodeNoPrize {
		t.Fatalf("draw: %s", claim.ReasonOf(o.Code))
	}
	ctx := testenv.Ctx(t, 5*time.Second)
	before, _ := e.RDB.HGetAll(ctx, rkeys.SKU(c.ID, "p")).Result()
	keys := []string{rkeys.Meta(c.ID), rkeys.SKU(c.ID, ""), rkeys.Request(c.ID, "rq-v"), rkeys.Users(c.ID),
		rkeys.BusinessLine(c.BusinessLine), rkeys.Outbox(c.ID), rkeys.Inflight(c.ID), rkeys.PartnerQuotas(c.ID)}
	if res, err := scripts.Void.Run(ctx, e.RDB, keys, o.ClaimID, "u-v", "").Int(); err != nil || res != 1 {
		t.Fatalf("void: %d %v", res, err)
	}
	if v, _ := e.RDB.HGet(ctx, rkeys.Users(c.ID), "u-v").Result(); v != "" {
		t.Fatalf("user count after the void %q, want none", v)
	}
	if n, _ := e.RDB.XLen(ctx, rkeys.Outbox(c.ID)).Result(); n != 0 {
		t.Fatalf("outbox %d after the void", n)
	}
	if n, _ := e.RDB.Exists(ctx, rkeys.SKU(c.ID, "")).Result(); n != 0 {
		t.Fatal("the void wrote a SKU hash for no SKU")
	}
	after, _ := e.RDB.HGetAll(ctx, rkeys.SKU(c.ID, "p")).Result()
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("prize hash changed by a no-prize void: %v -> %v", before, after)
	}
	if st := c.RequestState(t, "rq-v"); st != "V" {
		t.Fatalf("record %q after the void, want V", st)
	}
}

// The odds a user faces are the configured ones, checked statistically: 100,000 draws
// through the claimer (crypto/rand in the gateway, the walk in claim.lua) at weights
// 900 : 1 : 10 : 89 with stock that never runs out, Pearson's chi-square of the
// outcomes (and of the gateway's picks) against odds.Table.Probabilities.
//
// The bound: under correct odds the p-value is uniform on [0, 1], so this test fails
// by chance once in 10,000 runs (p < 1e-4) - rare enough not to be a flaky test. Its
// power: with 100,000 draws a 1-in-1,000 prize expected 100 times that came 150 times
// (+50 %), or the 1 % prize off by 15 % (1,150 instead of 1,000), gives chi-square
// above 22 on 3 degrees of freedom: p < 1e-4, caught. What it cannot see is a bias
// smaller than that; bench odds runs the same test on as many draws as Postgres holds.
func TestLotteryOddsStatistical(t *testing.T) {
	e := testenv.Private(t)
	skus := []testenv.SKU{{SKU: "phone", Stock: 100_000, Value: 1, Weight: 1},
		{SKU: "credit", Stock: 100_000, Value: 1, Weight: 10}, {SKU: "coupon", Stock: 100_000, Value: 1, Weight: 89}}
	c := e.Campaign(testenv.Spec{Lottery: true, NoPrize: 900, PerUser: 1, SKUs: skus})
	cl := claimertest.NewOn(e, testenv.NewKfake(t).Brokers(), nil)
	ctx := testenv.Ctx(t, 10*time.Minute)
	const draws = 100_000
	index := map[string]int{"": 0, "phone": 1, "credit": 2, "coupon": 3}
	var outcomes, picks [4]int64
	var mu sync.Mutex
	var failed error
	var wg sync.WaitGroup
	work := make(chan int, 256)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r := lotteryReq(c.ID, "u-"+strconv.Itoa(i), "rq-"+strconv.Itoa(i))
				err := cl.Do(ctx, r)
				mu.Lock()
				switch {
				case err != nil:
					failed = err
				case r.Code == claim.CodeAccepted || r.Code == claim.CodeNoPrize:
					outcomes[index[r.SKU]]++
					picks[index[r.DrawPick]]++
				default:
					failed = fmt.Errorf("draw %d: %s", i, claim.ReasonOf(r.Code))
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < draws; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	table := odds.Table{NoPrize: 900}
	for _, s := range skus {
		table.Prizes = append(table.Prizes, odds.Prize{SKU: s.SKU, Weight: s.Weight, InStock: true})
	}
	probs := table.Probabilities()
	for name, obs := range map[string][4]int64{"outcomes": outcomes, "picks": picks} {
		fit, err := odds.ChiSquare(obs[:], probs)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s of %d draws: %v (expected %v): chi-square %.2f, df %d, p-value %.4f", name, fit.Draws, obs,
			[]float64{probs[0] * draws, probs[1] * draws, probs[2] * draws, probs[3] * draws}, fit.ChiSquare, fit.DF, fit.PValue)
		if fit.Draws != draws || fit.DF != 3 {
			t.Fatalf("%s: %d draws, %d degrees of freedom; want %d, 3", name, fit.Draws, fit.DF, draws)
		}
		if fit.PValue < 1e-4 {
			t.Errorf("%s: p-value %.2g < 1e-4: the draws do not follow the configured odds", name, fit.PValue)
		}
	}
	if outcomes != picks {
		t.Errorf("with every prize in stock the outcomes %v must be the picks %v", outcomes, picks)
	}
}
