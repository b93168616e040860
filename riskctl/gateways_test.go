package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/testenv"
)

type gateway struct {
	public string
	proc   *testenv.Proc
}

func startGateway(t *testing.T, bin string) gateway {
	t.Helper()
	pub, adm := testenv.FreePort(t), testenv.FreePort(t)
	p := testenv.Start(t, bin, []string{
		"FLASH_REDIS_ADDR=" + testenv.RedisAddr(),
		"FLASH_PG_URL=" + testenv.PGURL(),
		"FLASH_KAFKA_BROKERS=" + testenv.BrokerList(),
		"FLASH_HTTP_ADDR=127.0.0.1:" + strconv.Itoa(pub),
		"FLASH_ADMIN_ADDR=127.0.0.1:" + strconv.Itoa(adm),
		"FLASH_LOG_LEVEL=warn",
	})
	p.WaitReady(t, "http://127.0.0.1:"+strconv.Itoa(adm)+"/readyz")
	return gateway{public: "http://127.0.0.1:" + strconv.Itoa(pub), proc: p}
}

type answer struct {
	status     int
	Result     string `json:"result"`
	Reason     string `json:"reason"`
	RetryAfter int64  `json:"retry_after_ms"`
	header     string
}

var client = &http.Client{Timeout: 30 * time.Second}

func (g gateway) claim(t *testing.T, camp, user, device string) answer {
	t.Helper()
	body := fmt.Sprintf(`{"campaign_id":%q,"sku":"rp-50","user_id":%q,"device_id":%q,"request_id":%q}`,
		camp, user, device, testenv.ID(t, "rq"))
	resp, err := client.Post(g.public+"/v1/claims", "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("claim on %s: %v", g.public, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header.Get("Retry-After")}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("claim answer %d %q: %v", resp.StatusCode, b, err)
	}
	return a
}

// Two gateway processes: a threshold changed with riskctl (the binary) mid-sale applies
// to the very next claim on both, with no restart; a block likewise.
func TestThresholdChangeAppliesToBothGateways(t *testing.T) {
	e := testenv.New(t)
	testenv.RequireBroker(t)
	gwBin := testenv.Build(t, "./gateway")
	ctlBin := testenv.Build(t, "./riskctl")
	a, b := startGateway(t, gwBin), startGateway(t, gwBin)
	camp := e.StockCampaign(1000, 100)
	dev := testenv.ID(t, "dev")
	ctl := func(args ...string) {
		t.Helper()
		cmd := exec.Command(ctlBin, append(args, "--actor", "risk-oncall")...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("riskctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	n := 0
	next := func(g gateway) answer {
		n++
		return g.claim(t, camp, fmt.Sprintf("user-%d", n), dev)
	}
	want := func(got answer, status int, reason string) {
		t.Helper()
		if got.status != status || got.Reason != reason {
			t.Fatalf("claim %d: %d %q, want %d %q", n, got.status, got.Reason, status, reason)
		}
	}

	// Without rules both accept.
	want(next(a), 200, "")
	want(next(b), 200, "")
	// device.max=2 (a rule counts the claims accepted while it is on): two more, on
	// either gateway, then 429 on both.
	ctl("rules", "set", "--campaign", camp, "device.max=2", "device.window=1h")
	want(next(b), 200, "")
	want(next(a), 200, "")
	got := next(a)
	want(got, 429, "device_velocity")
	if got.RetryAfter <= 0 || got.RetryAfter > 3_600_000 || got.header == "" {
		t.Errorf("429 retry_after_ms=%d Retry-After=%q", got.RetryAfter, got.header)
	}
	want(next(b), 429, "device_velocity")
	// Raised mid-sale to 4: the very next claim on each gateway passes.
	ctl("rules", "set", "--campaign", camp, "device.max=4")
	want(next(a), 200, "")
	want(next(b), 200, "")
	want(next(a), 429, "device_velocity")
	want(next(b), 429, "device_velocity")
	// Lowered to 1: rejected at once everywhere.
	ctl("rules", "set", "--campaign", camp, "device.max=1")
	want(next(b), 429, "device_velocity")
	// Off (0): accepted at once everywhere.
	ctl("rules", "set", "--campaign", camp, "device.max=0")
	want(next(a), 200, "")
	want(next(b), 200, "")
	// A block: 403 on both; unblock: 200 on both.
	ctl("block", "device", dev, "--reason", "mid-sale block", "--ttl", "1h")
	want(next(a), 403, "blocked")
	want(next(b), 403, "blocked")
	ctl("unblock", "device", dev)
	want(next(b), 200, "")
	want(next(a), 200, "")

	if got := auditCount(t, e, "campaign:"+camp); got != 4 {
		t.Errorf("%d audit rows for the campaign, want 4", got)
	}
	if got := auditCount(t, e, "device:"+dev); got != 2 {
		t.Errorf("%d audit rows for the device, want 2", got)
	}
}
