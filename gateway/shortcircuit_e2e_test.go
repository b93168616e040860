package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

// shortCircuited reads flashgate_claims_short_circuited_total{reason} from /metrics.
func shortCircuited(t *testing.T, g *gateway, reason string) int64 {
	t.Helper()
	a := send(t, "GET", g.adm+"/metrics", "", nil)
	prefix := `flashgate_claims_short_circuited_total{reason="` + reason + `"} `
	sc := bufio.NewScanner(bytes.NewReader(a.body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %q: %v", sc.Text(), err)
			}
			return int64(n)
		}
	}
	return 0
}

// The whole process as main wires it: after the sell-out the gateway answers sold_out
// without the claim script, an accepted request's retry still gets its claim, a key reuse
// is still 422, and the campaign figures count every sold_out answer.
func TestShortCircuitEndToEnd(t *testing.T) {
	g := startGateway(t)
	camp, _, rdb, _ := setupCampaign(t, `[{"sku":"rp-50","stock":1,"value":50}]`)
	c := newClaimant(t, g)
	waitStart(t, rdb, camp)

	u1, rq1 := testenv.ID(t, "u"), testenv.ID(t, "rq")
	first := c.claimUntilAnswered(camp, "rp-50", u1, "d-1", rq1)
	if first.status != 200 {
		t.Fatalf("first claim: %s", first)
	}
	claimID := first.json(t)["claim_id"]

	const soldOut = `{"result":"rejected","reason":"sold_out"}`
	answered := 0
	claim := func() {
		t.Helper()
		if a := c.claim(camp, "rp-50", testenv.ID(t, "u"), "d-2", testenv.ID(t, "rq")); a.status != 409 || string(a.body) != soldOut {
			t.Fatalf("claim after the sell-out: %s; want 409 sold_out", a)
		}
		answered++
	}
	// The first sold_out comes from the script; once the gateway's change subscription is
	// up, the next ones are local.
	testenv.Eventually(t, 10*time.Second, "claims are short-circuited", func() bool {
		claim()
		return shortCircuited(t, g, "sold_out") > 0
	})
	before := shortCircuited(t, g, "sold_out")
	const n = 20
	for range n {
		claim()
	}
	// A route (and with it the sold-out flag) is re-learned from the script once a
	// second, so one or two of these may be decided there.
	if got := shortCircuited(t, g, "sold_out") - before; got < n-2 {
		t.Errorf("%d of %d claims after the sell-out short-circuited; want at least %d", got, n, n-2)
	}

	again := c.claimUntilAnswered(camp, "rp-50", u1, "d-1", rq1)
	if again.status != 200 || again.header.Get("Idempotent-Replayed") != "true" || again.json(t)["claim_id"] != claimID {
		t.Errorf("retry of the accepted request after the sell-out: %s %v; want 200, replayed, claim %v", again, again.header, claimID)
	}
	if a := c.claim(camp, "rp-50", testenv.ID(t, "u"), "d-1", rq1); a.status != 422 {
		t.Errorf("key reuse after the sell-out: %s; want 422", a)
	}

	testenv.Eventually(t, 5*time.Second, "the figures count every sold_out answer", func() bool {
		a := send(t, "GET", g.adm+"/admin/v1/campaigns/"+camp, "", nil, "Authorization", "Bearer "+testToken)
		rej, _ := a.json(t)["rejections"].(map[string]any)
		return rej["sold_out"] == float64(answered)
	})
}

// The benchmark baselines' flags: defaults are the production behaviour; a bad produce
// mode is a usage error naming the flag.
func TestBaselineFlags(t *testing.T) {
	t.Setenv("FLASH_PRODUCE_MODE", "")
	t.Setenv("FLASH_SHORT_CIRCUIT", "")
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil || cfg.produceMode != "async" || !cfg.shortCircuit {
		t.Fatalf("defaults: produce mode %q, short-circuit %v, err %v; want async, true", cfg.produceMode, cfg.shortCircuit, err)
	}
	cfg, err = parseFlags([]string{"-produce-mode", "sync", "-short-circuit=false"}, io.Discard)
	if err != nil || cfg.produceMode != "sync" || cfg.shortCircuit {
		t.Fatalf("baseline flags: %q %v %v", cfg.produceMode, cfg.shortCircuit, err)
	}
	t.Setenv("FLASH_PRODUCE_MODE", "eventually")
	var ue usageError
	if _, err := parseFlags(nil, io.Discard); err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), "FLASH_PRODUCE_MODE") {
		t.Errorf("bad produce mode: %v; want a usage error naming FLASH_PRODUCE_MODE", err)
	}
}
