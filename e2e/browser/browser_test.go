// Package browser runs the claim page and the console in a real browser: Debian's
// chromium driven by playwright-core (run.js), against a gateway and a settler this
// test starts on the dev stack. `make test` installs chromium and runs `npm ci` here
// first (scripts/browser-deps.sh); without them the test fails saying so.
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/kafkaopt"
	"github.com/flashgate/flashgate/internal/testenv"
)

const adminToken = "browser-admin-token"

// TestClaimPageAndConsole: the page counts down on the server's clock (the phone's is
// an hour off), claims at the opening second, rides through a 503 whose claim was made
// (same request_id, one claim), shows the voucher, tells a late user it is sold out,
// and shows a hostile theme as text; the console signs in with the token in a header,
// shows a live sale's figures moving and pauses it after a confirmation.
// FLASH_UPDATE_SCREENSHOTS=1 rewrites docs/h5-claim-page.png and docs/console.png.
func TestClaimPageAndConsole(t *testing.T) {
	root := testenv.ModuleRoot(t)
	dir := filepath.Join(root, "e2e", "browser")
	chromium := os.Getenv("FG_CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s: %v; run scripts/browser-deps.sh (make test does) to install Debian's chromium", chromium, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed: run scripts/browser-deps.sh (make test does: npm ci in e2e/browser)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found: run scripts/browser-deps.sh (make test does)")
	}

	testenv.RequireBroker(t)
	pg := testenv.PG(t) // migrated, with the campaign_pages table
	group := testenv.ID(t, "browser-settler")
	// run.js creates this business line. The background work that acts on every
	// campaign of the shared stack (reconciliation repairs, expiry, Redis-loss recovery)
	// is off or kept to it, so this test never rebuilds another test's counters.
	bl := testenv.ID(t, "bl-h5")
	testenv.GroupAtEnd(t, testenv.Brokers(), group, kafkaopt.ClaimsTopic)
	common := []string{"FLASH_REDIS_ADDR=" + testenv.RedisAddr(), "FLASH_PG_URL=" + testenv.PGURL(),
		"FLASH_KAFKA_BROKERS=" + testenv.BrokerList()}
	pub, adm, st := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	gw := testenv.Start(t, testenv.Build(t, "./gateway"), append(common,
		"FLASH_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(pub), "FLASH_ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(adm),
		"FLASH_ADMIN_TOKEN="+adminToken, "FLASH_SETTLER_GROUP="+group, "FLASH_RECOVERY_BUSINESS_LINES="+bl,
		// The first accepted claim's answer is lost: the page's retry must get it back.
		"FLASH_FAULT_CLAIM_503=1"))
	gw.WaitReady(t, "http://127.0.0.1:"+strconv.Itoa(adm)+"/readyz")
	stl := testenv.Start(t, testenv.Build(t, "./settler"), append(common,
		"FLASH_SETTLER_ADDR=127.0.0.1:"+strconv.Itoa(st), "FLASH_SETTLER_GROUP="+group,
		"FLASH_RECOVERY_BUSINESS_LINES="+bl, "FLASH_RECONCILE_INTERVAL=0", "FLASH_EXPIRE_INTERVAL=0"))
	stl.WaitReady(t, "http://127.0.0.1:"+strconv.Itoa(st)+"/healthz")

	env := append(os.Environ(), "FG_PUBLIC=http://127.0.0.1:"+strconv.Itoa(pub),
		"FG_ADMIN=http://127.0.0.1:"+strconv.Itoa(adm), "FG_TOKEN="+adminToken, "FG_CHROMIUM="+chromium, "FG_BL="+bl)
	if os.Getenv("FLASH_UPDATE_SCREENSHOTS") == "1" {
		env = append(env, "FG_SHOTS="+filepath.Join(root, "docs"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "run.js")
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	t.Logf("run.js:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("browser scenarios failed: %v\n%s", err, stdout.String())
	}
	lines := bytes.Split(bytes.TrimSpace(stdout.Bytes()), []byte("\n"))
	var res struct {
		OK        bool   `json:"ok"`
		Campaign  string `json:"campaign"`
		User      string `json:"user"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(lines[len(lines)-1], &res); err != nil || !res.OK {
		t.Fatalf("run.js did not report success: %v\n%s", err, stdout.String())
	}

	// The books: one claim for the first user, from the page's one request_id, and
	// none for the late user - the retry through the 503 made no second claim.
	qctx, qcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer qcancel()
	var n, late int
	var reqID string
	testenv.Eventually(t, 20*time.Second, "the first user's claim settles", func() bool {
		err := pg.QueryRow(qctx, `SELECT count(*), coalesce(min(request_id), '') FROM claims WHERE campaign_id = $1 AND user_id = $2`,
			res.Campaign, res.User).Scan(&n, &reqID)
		return err == nil && n > 0
	})
	if err := pg.QueryRow(qctx, `SELECT count(*) FROM claims WHERE campaign_id = $1 AND user_id <> $2`, res.Campaign, res.User).Scan(&late); err != nil {
		t.Fatal(err)
	}
	if n != 1 || reqID != res.RequestID || late != 0 {
		t.Errorf("claims of campaign %s: %d for the first user (request_id %q, the page sent %q), %d for others; want 1, the page's, 0",
			res.Campaign, n, reqID, res.RequestID, late)
	}
}
