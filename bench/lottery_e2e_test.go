package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/bench/load"
	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/report"
	"github.com/flashgate/flashgate/internal/catalog"
	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/testenv"
)

// Issue 17's bench leg end to end, against the real gateway and settler binaries on the
// dev stack and a real fulfilment server: `bench setup --lottery` makes a turntable (a
// rare prize of stock 2, a delivered credit prize, ~90 % no prize), `bench run` draws a
// few thousand times (retries included), `bench verify` passes every check - the
// lottery's among them: every answered draw one draws row, one row per counted draw,
// prizes within stock and budget, the odds - and `bench odds` passes; the credit prizes
// are delivered, each once. Then two doctored inputs prove the checks can fail: a
// record with a draw the gateway never made, a draws row Redis never counted, and a
// prize won beyond its stock.
func TestLotteryBenchEndToEnd(t *testing.T) {
	testenv.RequireBroker(t)
	pg := testenv.PG(t)
	var (
		mu    sync.Mutex
		calls = map[string]int{}
	)
	fulfil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if r.Method != http.MethodPost || key == "" {
			http.Error(w, "want POST with Idempotency-Key", http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls[key]++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer fulfil.Close()

	const token = "bench-lottery-admin"
	pub, adm, sp := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	public, admin := "http://127.0.0.1:"+strconv.Itoa(pub), "http://127.0.0.1:"+strconv.Itoa(adm)
	common := []string{"FLASH_REDIS_ADDR=" + testenv.RedisAddr(), "FLASH_PG_URL=" + testenv.PGURL(),
		"FLASH_KAFKA_BROKERS=" + testenv.BrokerList()}
	group := testenv.ID(t, "bench-lottery-settler")
	testenv.GroupAtEnd(t, testenv.Brokers(), group, kafkaopt.ClaimsTopic)
	gw := testenv.Start(t, testenv.Build(t, "./gateway"), append(common, "FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub),
		"FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm), "FLASH_ADMIN_TOKEN="+token))
	gw.WaitReady(t, admin+"/healthz")
	st := testenv.Start(t, testenv.Build(t, "./settler"), append(common, "FLASH_SETTLER_ADDR=127.0.0.1:"+strconv.Itoa(sp),
		"FLASH_SETTLER_GROUP="+group))
	st.WaitReady(t, "http://127.0.0.1:"+strconv.Itoa(sp)+"/healthz")

	camp, bl := testenv.ID(t, "blot"), testenv.ID(t, "blotbl")
	code, out, errs := call(t, "setup", "--admin", admin, "--token", token, "--campaign", camp, "--business-line", bl,
		"--lottery", "rare:2:500:5,credit:100000:10:1000", "--no-prize-weight", "8995", "--per-user-limit", "3",
		"--delivery-url", fulfil.URL+"/prizes", "--delivery-skus", "credit", "--starts-in", "2s")
	if code != exitHeld || !strings.Contains(out, "lottery: no-prize weight 8995 of 10000") {
		t.Fatalf("setup: exit %d\n%s%s", code, out, errs)
	}

	dir := filepath.Join(t.TempDir(), "run")
	code, out, errs = call(t, "run", "--target", public, "--campaign", camp, "--skus", "any", "--rate", "1000/s",
		"--duration", "3s", "--users", "3000", "--seed", "17", "--mix", "retries=10%", "--burst", "none",
		"--wait-start", "2500ms", "--quiet", "--lag-budget", "1s", "--out", dir)
	if code != exitHeld && code != exitBroke {
		t.Fatalf("run: exit %d\n%s%s", code, out, errs)
	}
	f, err := report.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	res := f.Run
	if res.Violated() || res.NoPrize < 2000 || res.Won < 100 || res.Won != res.Accepted || res.Errors != 0 {
		t.Fatalf("run: won %d (accepted %d), no prize %d, errors %d, violations %v\n%s", res.Won, res.Accepted, res.NoPrize,
			res.Errors, res.Violations, out)
	}
	share := load.FmtPct(float64(res.NoPrize) / float64(res.Won+res.NoPrize))
	if !strings.Contains(out, "won, "+load.FmtInt(float64(res.NoPrize))+" no prize ("+share+" of draws)") {
		t.Errorf("run's summary lacks the draws line:\n%s", out)
	}

	// verify and odds run as bench's own least-privilege identities, as make demo and
	// make kinds run them (scripts/dev-credentials.sh): read-only Redis commands and
	// SELECT on the books.
	benchPG, err := url.Parse(testenv.PGURL())
	if err != nil {
		t.Fatal(err)
	}
	benchPG.User = url.UserPassword("flashgate_bench", "flashgate_bench_dev")
	t.Setenv("FLASH_PG_URL", benchPG.String())
	t.Setenv("FLASH_REDIS_USERNAME", "flashgate-bench")
	t.Setenv("FLASH_REDIS_PASSWORD", "flashgate-bench-dev")
	code, out, errs = call(t, "verify", "--campaign", camp, "--record", dir, "--wait", "50s")
	if code != exitHeld {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"PASS  every 200 is one row", "PASS  every draw answered is one row", "PASS  one row per draw",
		"PASS  won draws are the claims", "PASS  prizes won within stock", "PASS  prize value within budget", "PASS  odds",
		"PASS  stock per SKU", "PASS  campaign budget"} {
		if !strings.Contains(out, want) {
			t.Errorf("verify's report lacks %q:\n%s", want, out)
		}
	}
	code, out, errs = call(t, "odds", "--campaign", camp)
	if code != exitHeld || !strings.Contains(out, "p-value") {
		t.Fatalf("odds: exit %d\n%s%s", code, out, errs)
	}

	// The credit prizes are delivered, each exactly once (one call per Idempotency-Key:
	// this server never fails, so a second call would be a second delivery).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var rep *catalog.LotteryReport
	testenv.Eventually(t, 45*time.Second, "every credit prize delivered", func() bool {
		if rep, err = catalog.Lottery(ctx, pg, camp); err != nil {
			t.Fatal(err)
		}
		return rep.Delivering == 0 && rep.Failed == 0 && rep.Delivered > 0
	})
	var credit, rare catalog.LotteryPrize
	for _, p := range rep.Prizes {
		switch p.SKU {
		case "credit":
			credit = p
		case "rare":
			rare = p
		}
	}
	mu.Lock()
	once := 0
	for _, n := range calls {
		if n == 1 {
			once++
		}
	}
	ncalls := len(calls)
	mu.Unlock()
	if credit.Won != res.Won-rare.Won || credit.Delivered != credit.Won || rare.Delivered != 0 || rare.Won > 2 ||
		int64(ncalls) != credit.Won || once != ncalls {
		t.Fatalf("credit won %d delivered %d; rare won %d delivered %d; run won %d; fulfilment server: %d keys, %d called once",
			credit.Won, credit.Delivered, rare.Won, rare.Delivered, res.Won, ncalls, once)
	}

	// A doctored record: a no-prize draw the gateway never made.
	entries, err := record.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	entries = append(entries, record.Entry{DrawID: camp + ".forged", RequestID: "rq-forged", Campaign: camp, User: "u-forged",
		Result: record.ResultNoPrize})
	forged := filepath.Join(t.TempDir(), "forged")
	w, err := record.Create(forged)
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		w.Add(&entries[i])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	code, out, _ = call(t, "verify", "--campaign", camp, "--record", forged, "--wait", "5s")
	if code != exitViolated || !strings.Contains(out, "FAIL  every draw answered is one row") || !strings.Contains(out, "missing "+camp+".forged") {
		t.Fatalf("verify with a forged draw in the record: exit %d\n%s", code, out)
	}

	// A doctored row: a draws row no decision counted (Redis's per-user counts do not
	// know it). Removed again at the end: the campaign is this test's own.
	if _, err := pg.Exec(ctx, `INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id, odds_version, random, pick,
			outcome, sku, value, drawn_at)
		SELECT $1 || '.doctored', id, 'rq-doctored', 'u-doctored', 'd-doctored', odds_version, 0, NULL, 'no_prize', NULL, 0, now()
		FROM campaigns WHERE id = $1`, camp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pg.Exec(context.Background(), `DELETE FROM draws WHERE draw_id = $1`, camp+".doctored") })
	verifyJSON := func() (int, map[string]string, []string) {
		code, out, _ := call(t, "verify", "--campaign", camp, "--wait", "5s", "--json")
		var vr struct {
			Held   bool `json:"held"`
			Checks []struct {
				Name     string   `json:"name"`
				Pass     bool     `json:"pass"`
				Detail   string   `json:"detail"`
				Examples []string `json:"examples"`
			} `json:"checks"`
		}
		if err := json.Unmarshal([]byte(out), &vr); err != nil {
			t.Fatalf("verify --json: %v\n%s", err, out)
		}
		failed := map[string]string{}
		var examples []string
		for _, c := range vr.Checks {
			if !c.Pass {
				failed[c.Name] = c.Detail
				examples = append(examples, c.Examples...)
			}
		}
		if vr.Held != (len(failed) == 0) {
			t.Fatalf("verify --json: held %v with failed checks %v", vr.Held, failed)
		}
		return code, failed, examples
	}
	code, failed, _ := verifyJSON()
	if code != exitViolated || len(failed) != 1 || !strings.Contains(failed["one row per draw"], "draws counted in Redis") {
		t.Fatalf("verify with a doctored draws row: exit %d, failed %v", code, failed)
	}

	// Doctored rows again: the rare prize (stock 2) won three more times than it was,
	// which no stock allows.
	if _, err := pg.Exec(ctx, `INSERT INTO draws (draw_id, campaign_id, request_id, user_id, device_id, odds_version, random, pick,
			outcome, sku, value, drawn_at)
		SELECT $1 || '.doctored-rare-' || i, id, 'rq-doctored-rare-' || i, 'u-doctored', 'd-doctored', odds_version, 0, 'rare',
			'won', 'rare', 500, now()
		FROM campaigns, generate_series(1, 3) AS i WHERE id = $1`, camp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = pg.Exec(context.Background(), `DELETE FROM draws WHERE campaign_id = $1 AND draw_id LIKE '%.doctored-rare-%'`, camp)
	})
	code, failed, examples := verifyJSON()
	want := fmt.Sprintf("rare: won %d times, stock 2", rare.Won+3)
	if code != exitViolated || failed["prizes won within stock"] == "" || !strings.Contains(strings.Join(examples, "\n"), want) ||
		failed["won draws are the claims"] == "" {
		t.Fatalf("verify with the rare prize won beyond its stock: exit %d, failed %v, examples %v; want %q", code, failed, examples, want)
	}
}
