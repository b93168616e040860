package main

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"github.com/flashgate/flashgate/bench/setup"
	"github.com/flashgate/flashgate/internal/flagenv"
)

func cmdSetup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("setup", "setup --campaign C --business-line B --skus SKU:STOCK:VALUE,... [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var (
		cfg                setup.Config
		skus               string
		budget, blBudget   int
		limit              int
		startsIn, duration time.Duration
		ttl                time.Duration
		asJSON             bool
	)
	fe.String(&cfg.Admin, "admin", "FLASH_BENCH_ADMIN", "http://127.0.0.1:8081", "the gateway's admin API base URL")
	fs.StringVar(&cfg.Token, "token", fe.Secret("FLASH_ADMIN_TOKEN"), "admin bearer token; prefer the environment (FLASH_ADMIN_TOKEN), a flag shows in the process list")
	fs.StringVar(&cfg.Campaign, "campaign", "", "campaign id to create (required)")
	fs.StringVar(&cfg.Name, "name", "", "campaign name (default \"bench <campaign>\")")
	fs.StringVar(&cfg.BusinessLine, "business-line", "", "business line id to create or update (required)")
	fs.IntVar(&blBudget, "bl-budget", 0, "business line total budget (default: the campaign's budget)")
	fs.IntVar(&budget, "budget", 0, "campaign budget (default: the face value of all its stock)")
	fs.StringVar(&skus, "skus", "", "SKUs as sku:stock:value, comma-separated, like rp-50:2000:50,rp-100:1000:100 (required)")
	fs.IntVar(&limit, "per-user-limit", 1, "accepted claims allowed per user")
	fs.DurationVar(&startsIn, "starts-in", 3*time.Second, "how long from now the campaign opens")
	fs.DurationVar(&duration, "duration", 10*time.Minute, "how long the campaign runs once open")
	fs.DurationVar(&ttl, "voucher-ttl", 72*time.Hour, "how long a claimed voucher stays valid")
	fs.StringVar(&cfg.Segment, "segment", "", "restrict the campaign to a segment (created beforehand with PUT /admin/v1/segments/NAME)")
	var pointsPrice int
	fs.IntVar(&pointsPrice, "points-price", 0, "points mall model: make the campaign points_item with every SKU at this many points, and give --points-users users (u-0 ..) points for --per-user-limit items each")
	fs.IntVar(&cfg.Points.Users, "points-users", 0, "points mall model: how many users (u-0 .. u-N-1, as bench run names them) get a balance; run bench with --users N")
	fe.String(&cfg.Points.Public, "public", "FLASH_BENCH_TARGET", "http://127.0.0.1:8080", "the gateway's public API base URL (the points mall model's grants)")
	fs.BoolVar(&asJSON, "json", false, "print what was made as JSON")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "setup", errUnexpectedArgs(fs.Args()))
	}
	var err error
	if cfg.SKUs, err = setup.ParseSKUs(skus); err != nil {
		return usageErr(stderr, "setup", err)
	}
	cfg.Budget, cfg.BLBudget, cfg.PerUserLimit = int64(budget), int64(blBudget), int64(limit)
	cfg.Points.Price = int64(pointsPrice)
	cfg.StartsIn, cfg.Duration, cfg.VoucherTTL = startsIn, duration, ttl
	if err := cfg.Validate(); err != nil {
		return usageErr(stderr, "setup", err)
	}
	made, err := setup.Run(ctx, cfg)
	if err != nil {
		return failed(stderr, "setup", err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(made)
	} else {
		made.Print(stdout)
	}
	return exitHeld
}
