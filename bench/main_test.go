package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/report"
)

func call(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := dispatch(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndHelp(t *testing.T) {
	if code, _, errs := call(t); code != exitUsage || !strings.Contains(errs, "commands:") {
		t.Errorf("no command: %d %q", code, errs)
	}
	if code, _, _ := call(t, "fly"); code != exitUsage {
		t.Errorf("unknown command: %d", code)
	}
	if code, out, _ := call(t, "--help"); code != exitHeld || !strings.Contains(out, "exit codes") {
		t.Errorf("--help: %d %q", code, out)
	}
	for _, c := range commands {
		code, out, _ := call(t, c.name, "--help")
		if code != exitHeld || !strings.Contains(out, "usage: bench "+c.name) {
			t.Errorf("%s --help: exit %d, output %q", c.name, code, out)
		}
		if code, _, errs := call(t, c.name, "--no-such-flag"); code != exitUsage || !strings.Contains(errs, "--help") {
			t.Errorf("%s --no-such-flag: exit %d, stderr %q", c.name, code, errs)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--skus", "a"}, "--campaign"},
		{[]string{"run", "--campaign", "c"}, "--skus"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "--rate", "fast"}, "rate"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "--mix", "bots=200%"}, "--mix"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "--burst", "x"}, "--burst"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "--slo", "p99"}, "slo"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "extra"}, "unexpected arguments"},
		{[]string{"ramp", "--campaign", "c", "--skus", "a", "--step", "x0.5"}, "step"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--skus", "a:1"}, "sku:stock:value"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--skus", "a:1:1", "--per-user-limit", "0"}, "per-user-limit"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:5:10:-1", "--no-prize-weight", "9"}, "lottery: \"p\": weight -1 is negative"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:0:10:1", "--no-prize-weight", "9"}, "a prize needs stock"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:5:10:0", "--no-prize-weight", "0"}, "sum to 0"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:5:10:1"}, "no-prize-weight: required"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:5:10:1", "--no-prize-weight", "-2"}, "no-prize-weight -2"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:5:10:1", "--no-prize-weight", "9", "--skus", "a:1:1"}, "give --lottery, not --skus"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--skus", "a:1:1", "--no-prize-weight", "9"}, "no-prize-weight: only a lottery"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--skus", "a:1:1", "--delivery-url", "http://x/y"}, "delivery-url: only a lottery"},
		{[]string{"setup", "--campaign", "c", "--business-line", "b", "--lottery", "p:5:10:1", "--no-prize-weight", "9", "--delivery-url", "mailto:x"}, "delivery-url \"mailto:x\""},
		{[]string{"verify"}, "--campaign"},
		{[]string{"verify", "--campaign", "c", "--record", "/nonexistent"}, "record"},
		{[]string{"limits", "--only", "gpu"}, "--only"},
		{[]string{"limits", "--only", "http", "--lag-budget", "-1ms"}, "--lag-budget"},
		{[]string{"ramp", "--campaign", "c", "--skus", "a", "--warmup", "-1s"}, "warm-up"},
		{[]string{"report"}, "folder"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "--cpu", "gateway"}, "--cpu"},
		{[]string{"run", "--campaign", "c", "--skus", "a", "--cpu", "gateway=2147483000"}, "no such process"},
	} {
		code, _, errs := call(t, tc.args...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 3 naming %q", tc.args, code, errs, tc.want)
		}
		// A usage error changes nothing: no output folder (the default is out/...).
		if _, err := os.Stat("out"); err == nil {
			t.Errorf("%v: a usage error created ./out", tc.args)
			_ = os.RemoveAll("out")
		}
	}
	// A store that cannot be reached is "could not run" (1), not a violation.
	if code, _, errs := call(t, "verify", "--campaign", "c", "--redis-addr", closedAddr(t)); code != exitBroke || !strings.Contains(errs, "redis") {
		t.Errorf("verify with Redis down: exit %d %q", code, errs)
	}
}

func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func serve(t *testing.T, h fasthttp.RequestHandler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h, Logger: quiet{}}
	go srv.Serve(ln)
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// run writes result.json, report.html and the record, and its exit code follows the
// objective (0/1) and the guarantees seen on the wire (2).
func TestRunExitCodesAndOutputs(t *testing.T) {
	ok := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(409)
		ctx.SetBodyString(`{"result":"rejected","reason":"sold_out"}`)
	})
	dir := filepath.Join(t.TempDir(), "out")
	base := []string{"run", "--target", ok, "--campaign", "c-cli", "--skus", "rp-50,rp-100", "--rate", "200/s", "--duration", "1s",
		"--burst", "none", "--mix", "invalid=0", "--quiet", "--lag-budget", "500ms", "--out", dir}
	code, out, errs := call(t, append(base, "--slo", "p99=1s")...)
	if code != exitHeld {
		t.Fatalf("run against a fast server: exit %d\n%s\n%s", code, out, errs)
	}
	for _, f := range []string{report.ResultFile, report.HTMLFile, record.FileName} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("run did not write %s: %v", f, err)
		}
	}
	for _, want := range []string{"sent       200 of 200", "rejected   200: sold_out 200", "p99", "report:"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if code, _, _ := call(t, "report", dir); code != exitHeld {
		t.Errorf("report %s: exit %d", dir, code)
	}

	slow := serve(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(100 * time.Millisecond)
		ctx.SetStatusCode(409)
		ctx.SetBodyString(`{"result":"rejected","reason":"sold_out"}`)
	})
	base[2] = slow
	if code, out, _ := call(t, append(base, "--slo", "p99=50ms")...); code != exitBroke || !strings.Contains(out, "BROKE") {
		t.Errorf("run against a slow server with p99=50ms: exit %d\n%s", code, out)
	}

	var m atomic.Int64
	forgetful := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(200)
		ctx.SetBodyString(`{"result":"accepted","claim_id":"c-cli.` + strconv.FormatInt(m.Add(1), 10) + `","value":50}`)
	})
	base[2] = forgetful
	base = append(base, "--mix", "retries=30%")
	if code, out, _ := call(t, base...); code != exitViolated || !strings.Contains(out, "VIOLATIONS") {
		t.Errorf("run against a server that gives retries new claims: exit %d\n%s", code, out)
	}
}

// run --cpu charges the run's CPU to the named processes and to bench, per answered
// request and per accepted claim, in the summary and in result.json. Here the "gateway"
// is this test process (the server runs in it), so it used CPU answering.
func TestRunReportsCPUByProcess(t *testing.T) {
	var m atomic.Int64
	srv := serve(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(200)
		ctx.SetBodyString(`{"result":"accepted","claim_id":"c-cpu.` + strconv.FormatInt(m.Add(1), 10) + `","value":50}`)
	})
	dir := filepath.Join(t.TempDir(), "out")
	code, out, errs := call(t, "run", "--target", srv, "--campaign", "c-cpu", "--skus", "rp-50", "--rate", "300/s",
		"--duration", "1s", "--burst", "none", "--mix", "none", "--quiet", "--lag-budget", "1s",
		"--cpu", "gateway="+strconv.Itoa(os.Getpid()), "--out", dir)
	if code != exitHeld {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"us/accepted", "gateway", "bench", "machine", "idle"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	f, err := report.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	c := f.CPU
	if c == nil {
		t.Fatal("result.json has no cpu section")
	}
	if c.Answered != f.Run.Answered || c.Accepted != f.Run.Accepted || c.Accepted != 300 {
		t.Errorf("cpu divides by answered %d accepted %d; run answered %d accepted %d (want 300)", c.Answered, c.Accepted, f.Run.Answered, f.Run.Accepted)
	}
	if len(c.Parts) != 2 || c.Parts[0].Name != "gateway" || c.Parts[1].Name != "bench" {
		t.Fatalf("parts %+v: want gateway then bench", c.Parts)
	}
	// The test process is both: the gateway tree's CPU includes bench's own.
	if g, b := c.Parts[0], c.Parts[1]; g.Seconds <= 0 || g.Seconds+0.02 < b.Seconds || g.PerAcceptedUs <= 0 {
		t.Errorf("gateway %+v, bench %+v: the gateway process ran both", g, b)
	}
	if c.WindowSeconds < 0.9 || c.Machine.Seconds <= 0 {
		t.Errorf("window %.2fs, machine %.2fs", c.WindowSeconds, c.Machine.Seconds)
	}
}
