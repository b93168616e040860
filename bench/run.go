package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/flashgate/flashgate/bench/cpu"
	"github.com/flashgate/flashgate/bench/load"
	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/report"
	"github.com/flashgate/flashgate/bench/traffic"
	"github.com/flashgate/flashgate/internal/flagenv"
)

// loadFlags are the flags run and ramp share: where to send, what traffic, how.
type loadFlags struct {
	target, campaign, skus, mix, burst, out string
	users, connections, seed                int
	botUsers, botDevices, botIPs            int
	zipf                                    float64
	timeout, lagBudget, waitStart           time.Duration
	errorBudget, userTokenSecret            string
	quiet, asJSON                           bool
}

func (l *loadFlags) register(fs *flag.FlagSet, fe *flagenv.Set, defBurst string) {
	fe.String(&l.target, "target", "FLASH_BENCH_TARGET", "http://127.0.0.1:8080", "the gateway's public API base URL; several comma-separated (a gateway fleet) are sent to round-robin")
	fs.StringVar(&l.campaign, "campaign", "", "campaign id to claim from (required)")
	fs.StringVar(&l.skus, "skus", "", "SKU ids to claim, comma-separated, most popular first (zipf skew) (required)")
	fs.IntVar(&l.users, "users", 100000, "distinct real users (each with its own device and IP)")
	fs.IntVar(&l.seed, "seed", 1, "traffic seed: the same seed sends the same requests in the same order")
	fs.StringVar(&l.mix, "mix", "bots=5%,retries=10%,invalid=1%", "shares of bot-farm requests, client retries (same request_id) and malformed requests; none for all plain")
	fs.StringVar(&l.burst, "burst", defBurst, "opening burst: FACTORx[:DURATION] sends FACTOR × the rate for DURATION at the start; none to disable")
	fs.Float64Var(&l.zipf, "zipf", 1.1, "skew of SKU choice: SKU k gets weight 1/k^s; 0 or less for uniform")
	fs.IntVar(&l.botUsers, "bot-users", 0, "accounts in the bot farms (default users/10)")
	fs.IntVar(&l.botDevices, "bot-devices", 20, "devices the bot farms share")
	fs.IntVar(&l.botIPs, "bot-ips", 4, "IPs the bot farms share (sent as X-Forwarded-For; the gateway believes it only from FLASH_TRUSTED_PROXIES)")
	fs.IntVar(&l.connections, "connections", 512, "most requests in flight (one connection each); must exceed rate × the worst latency worth measuring")
	fs.DurationVar(&l.timeout, "timeout", 5*time.Second, "per-request timeout; a timeout counts as an error and its latency is recorded")
	fs.DurationVar(&l.lagBudget, "lag-budget", 0, "schedule lag (p99) beyond which bench says it could not keep its own schedule (default: a quarter of the objective's tightest latency bound, 10ms without one)")
	fs.DurationVar(&l.waitStart, "wait-start", 0, "wait this long before the first request (for a campaign that opens in a few seconds)")
	fs.StringVar(&l.errorBudget, "error-budget", "1%", "largest share of requests that may fail (no answer, timeout, 5xx, 4xx to a valid request)")
	fs.StringVar(&l.out, "out", "", "output folder for result.json, report.html and accepted.jsonl (default out/bench/<command>-<time>)")
	fe.String(&l.userTokenSecret, "user-token-secret", "FLASH_USER_TOKEN_SECRET", "", "sign an HS256 end-user token per user with this key and send it (a gateway with FLASH_USER_TOKEN_SECRET); one token per user, reused. Prefer the environment variable: a flag shows in ps")
	fs.BoolVar(&l.quiet, "quiet", false, "no progress line each second")
	fs.BoolVar(&l.asJSON, "json", false, "print result.json to stdout instead of the summary")
}

func (l *loadFlags) config(name string, stderr io.Writer) (load.Config, float64, error) {
	var cfg load.Config
	if l.campaign == "" {
		return cfg, 0, fmt.Errorf("--campaign is required")
	}
	var skus []string
	for _, s := range strings.Split(l.skus, ",") {
		if s = strings.TrimSpace(s); s != "" {
			skus = append(skus, s)
		}
	}
	if len(skus) == 0 {
		return cfg, 0, fmt.Errorf("--skus is required (like rp-50,rp-100)")
	}
	mix, err := traffic.ParseMix(l.mix)
	if err != nil {
		return cfg, 0, fmt.Errorf("--mix: %w", err)
	}
	burst, err := load.ParseBurst(l.burst)
	if err != nil {
		return cfg, 0, fmt.Errorf("--burst: %w", err)
	}
	budget, err := traffic.ParseShare(l.errorBudget)
	if err != nil {
		return cfg, 0, fmt.Errorf("--error-budget: %w", err)
	}
	if l.seed < 0 {
		return cfg, 0, fmt.Errorf("--seed %d: must not be negative", l.seed)
	}
	zipf := l.zipf
	if zipf <= 0 {
		zipf = -1
	}
	cfg = load.Config{Target: l.target, Burst: burst, Connections: l.connections, Timeout: l.timeout, LagBudget: l.lagBudget,
		UserTokenSecret: l.userTokenSecret,
		Traffic: traffic.Config{Campaign: l.campaign, SKUs: skus, Users: l.users, Seed: uint64(l.seed), Mix: mix, ZipfS: zipf,
			BotUsers: l.botUsers, BotDevices: l.botDevices, BotIPs: l.botIPs}}
	if !l.quiet {
		cfg.Progress = stderr
	}
	if _, err := traffic.New(cfg.Traffic); err != nil {
		return cfg, 0, err
	}
	if l.out == "" {
		l.out = filepath.Join("out", "bench", name+"-"+time.Now().Format("20060102-150405"))
	}
	return cfg, budget, nil
}

func (l *loadFlags) wait(ctx context.Context, stderr io.Writer) bool {
	if l.waitStart <= 0 {
		return true
	}
	fmt.Fprintf(stderr, "waiting %s for the campaign to open\n", l.waitStart)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(l.waitStart):
		return true
	}
}

func errUnexpectedArgs(args []string) error {
	return fmt.Errorf("unexpected arguments %q (every setting is a --flag)", args)
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "run --campaign C --skus A,B --rate N/s --duration D [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var lf loadFlags
	lf.register(fs, fe, "5x:1s")
	var rate, slo, cpuSpec string
	var duration time.Duration
	fs.StringVar(&rate, "rate", "1000/s", "requests per second after the burst (like 5000/s, 5k/s, 300/m)")
	fs.StringVar(&cpuSpec, "cpu", "", "processes whose CPU to report per answered request and accepted claim, as name=PID pairs (children included), like gateway=4121,redis=3990; bench and the whole machine are added (Linux /proc)")
	fs.DurationVar(&duration, "duration", 10*time.Second, "how long to send, burst included")
	fs.StringVar(&slo, "slo", "", "latency objective to judge the run by, like p99=10ms or p99=10ms,p99.9=50ms (default: none, only the error budget)")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "run", errUnexpectedArgs(fs.Args()))
	}
	cfg, budget, err := lf.config("run", stderr)
	if err != nil {
		return usageErr(stderr, "run", err)
	}
	if cfg.Rate, err = load.ParseRate(rate); err != nil {
		return usageErr(stderr, "run", err)
	}
	cfg.Duration = duration
	obj := load.Objective{ErrorBudget: budget}
	if slo != "" {
		if obj.Bounds, err = load.ParseSLO(slo); err != nil {
			return usageErr(stderr, "run", err)
		}
	}
	if cfg.LagBudget == 0 {
		cfg.LagBudget = obj.LagBudget()
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(stderr, "run", err)
	}
	var procs []cpu.Proc
	if cpuSpec != "" {
		if procs, err = cpu.ParseSpec(cpuSpec); err != nil {
			return usageErr(stderr, "run", err)
		}
	}
	rec, err := record.Create(lf.out)
	if err != nil {
		return failed(stderr, "run", err)
	}
	cfg.Record = rec
	if !lf.wait(ctx, stderr) {
		rec.Close()
		return failed(stderr, "run", ctx.Err())
	}
	var before *cpu.Snapshot
	if procs != nil {
		if before, err = cpu.Take(procs); err != nil {
			rec.Close()
			return failed(stderr, "run", err)
		}
	}
	res, err := load.Run(ctx, cfg)
	var cpuReport *cpu.Report
	if before != nil && err == nil {
		after, cerr := cpu.Take(procs)
		if cerr != nil {
			rec.Close()
			return failed(stderr, "run", cerr)
		}
		cpuReport = cpu.Between(before, after, res.Answered, res.Accepted)
	}
	if cerr := rec.Close(); err == nil && cerr != nil {
		return failed(stderr, "run", cerr)
	}
	if err != nil {
		return usageErr(stderr, "run", err)
	}
	v := res.Judge(obj)
	code := exitHeld
	switch {
	case res.Violated():
		code = exitViolated
	case !v.Held:
		code = exitBroke
	}
	f := &report.File{Mode: "run", Command: append([]string{"bench", "run"}, args...), Run: res, CPU: cpuReport, Exit: code}
	return finish(f, lf, stdout, stderr, code, func(w io.Writer) {
		report.Summary(w, res)
		report.CPUSummary(w, cpuReport)
	})
}

func cmdRamp(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ramp", "ramp --campaign C --skus A,B --slo p99=10ms [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var lf loadFlags
	lf.register(fs, fe, "none")
	var start, step, maxRate, minRate, slo string
	var stepDur, pause, warmup time.Duration
	var refine int
	fs.StringVar(&slo, "slo", "p99=10ms", "the latency objective each step must hold, like p99=10ms or p99=10ms,p99.9=50ms")
	fs.StringVar(&start, "start", "1000/s", "rate of the first step")
	fs.StringVar(&step, "step", "x1.5", "how each step raises the rate: xF multiplies by F, +N adds N/s")
	fs.StringVar(&maxRate, "max-rate", "200000/s", "stop (held) once the next step would exceed this")
	fs.StringVar(&minRate, "min-rate", "", "exit 1 unless at least this rate held (a gate for pipelines)")
	fs.DurationVar(&stepDur, "step-duration", 10*time.Second, "how long each step offers its rate")
	fs.DurationVar(&pause, "pause", 2*time.Second, "pause between steps so one step's backlog does not spill into the next")
	fs.IntVar(&refine, "refine", 2, "bisection steps between the highest rate that held and the lowest that broke")
	fs.DurationVar(&warmup, "warmup", 3*time.Second, "offer the start rate this long before the first step, judging nothing (connections, caches, pools); 0 for none")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "ramp", errUnexpectedArgs(fs.Args()))
	}
	cfg, budget, err := lf.config("ramp", stderr)
	if err != nil {
		return usageErr(stderr, "ramp", err)
	}
	rc := load.RampConfig{Run: cfg, StepDuration: stepDur, Refine: refine, Pause: pause, Warmup: warmup, Progress: stderr}
	if lf.quiet {
		rc.Progress = nil
	}
	rc.Objective.ErrorBudget = budget
	if rc.Objective.Bounds, err = load.ParseSLO(slo); err != nil {
		return usageErr(stderr, "ramp", err)
	}
	if rc.Start, err = load.ParseRate(start); err != nil {
		return usageErr(stderr, "ramp", fmt.Errorf("--start: %w", err))
	}
	if rc.MaxRate, err = load.ParseRate(maxRate); err != nil {
		return usageErr(stderr, "ramp", fmt.Errorf("--max-rate: %w", err))
	}
	if rc.Step, err = load.ParseStep(step); err != nil {
		return usageErr(stderr, "ramp", err)
	}
	var gate float64
	if minRate != "" {
		if gate, err = load.ParseRate(minRate); err != nil {
			return usageErr(stderr, "ramp", fmt.Errorf("--min-rate: %w", err))
		}
	}
	if err := rc.Validate(); err != nil {
		return usageErr(stderr, "ramp", err)
	}
	rec, err := record.Create(lf.out)
	if err != nil {
		return failed(stderr, "ramp", err)
	}
	rc.Run.Record = rec
	if !lf.wait(ctx, stderr) {
		rec.Close()
		return failed(stderr, "ramp", ctx.Err())
	}
	rr, err := load.Ramp(ctx, rc)
	if cerr := rec.Close(); err == nil && cerr != nil {
		return failed(stderr, "ramp", cerr)
	}
	if err != nil {
		return usageErr(stderr, "ramp", err)
	}
	code := exitHeld
	violated := false
	for _, s := range rr.Steps {
		violated = violated || s.Result.Violated()
	}
	switch {
	case violated:
		code = exitViolated
	case rr.HighestHeld == 0, gate > 0 && rr.HighestHeld < gate, rr.Limit == "interrupted":
		code = exitBroke
	}
	f := &report.File{Mode: "ramp", Command: append([]string{"bench", "ramp"}, args...), Ramp: rr, Exit: code}
	return finish(f, lf, stdout, stderr, code, func(w io.Writer) {
		report.RampSummary(w, rr)
		if violated {
			fmt.Fprintln(w, "GUARANTEE VIOLATED on the wire during the ramp: see the steps' violations in result.json")
		}
		if gate > 0 && rr.HighestHeld < gate {
			fmt.Fprintf(w, "below the gate: --min-rate %s/s\n", load.FmtInt(gate))
		}
	})
}

// finish writes result.json and report.html, prints the summary (or the JSON) and
// returns code.
func finish(f *report.File, lf loadFlags, stdout, stderr io.Writer, code int, summary func(io.Writer)) int {
	if err := report.Write(lf.out, f); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		if code == exitHeld {
			code = exitBroke
		}
	}
	if lf.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(f)
	} else {
		summary(stdout)
		abs, _ := filepath.Abs(lf.out)
		fmt.Fprintf(stdout, "report: %s\nresult: %s\nrecord: %s\n", filepath.Join(abs, report.HTMLFile),
			filepath.Join(abs, report.ResultFile), filepath.Join(abs, record.FileName))
	}
	return code
}
