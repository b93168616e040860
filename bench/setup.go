package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flashgate/flashgate/bench/setup"
	"github.com/flashgate/flashgate/internal/flagenv"
)

func cmdSetup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("setup", "setup --campaign C --business-line B (--skus SKU:STOCK:VALUE,... | --lottery SKU:STOCK:VALUE:WEIGHT,... --no-prize-weight W) [flags]", stdout, stderr)
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
	fs.IntVar(&limit, "per-user-limit", 1, "accepted claims allowed per user (a lottery: draws, won or not)")
	fs.DurationVar(&startsIn, "starts-in", 3*time.Second, "how long from now the campaign opens")
	fs.DurationVar(&duration, "duration", 10*time.Minute, "how long the campaign runs once open")
	fs.DurationVar(&ttl, "voucher-ttl", 72*time.Hour, "how long a claimed voucher stays valid")
	fs.StringVar(&cfg.Segment, "segment", "", "restrict the campaign to a segment (created beforehand with PUT /admin/v1/segments/NAME)")
	var pointsPrice int
	fs.IntVar(&pointsPrice, "points-price", 0, "points mall model: make the campaign points_item with every SKU at this many points, and give --points-users users (u-0 ..) points for --per-user-limit items each")
	fs.IntVar(&cfg.Points.Users, "points-users", 0, "points mall model: how many users (u-0 .. u-N-1, as bench run names them) get a balance; run bench with --users N")
	fe.String(&cfg.Points.Public, "public", "FLASH_BENCH_TARGET", "http://127.0.0.1:8080", "the gateway's public API base URL (the points mall model's grants)")
	var lottery, delivered string
	var noPrize int64
	fs.StringVar(&lottery, "lottery", "", "lottery model: make the campaign kind lottery with these prizes as sku:stock:value:weight, comma-separated, "+
		"like iphone:5:1000:1,credit:2000:10:9999 (stock >= 1, weight >= 0; a draw picks a prize with probability weight/total, "+
		"total = the weights + --no-prize-weight); instead of --skus")
	fs.Int64Var(&noPrize, "no-prize-weight", 0, "lottery model: the no-prize band's weight (required with --lottery; 0: every draw picks a prize), like 90000")
	fs.StringVar(&cfg.Lottery.DeliveryURL, "delivery-url", "", "lottery model: deliver won prizes through this webhook (POST with Idempotency-Key: <claim_id>), like http://127.0.0.1:9099/prizes")
	fs.StringVar(&delivered, "delivery-skus", "", "lottery model: only these prizes (comma-separated) are delivered to --delivery-url (default: every prize)")
	fs.BoolVar(&asJSON, "json", false, "print what was made as JSON")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "setup", errUnexpectedArgs(fs.Args()))
	}
	noPrizeSet := false
	fs.Visit(func(f *flag.Flag) { noPrizeSet = noPrizeSet || f.Name == "no-prize-weight" })
	var err error
	switch {
	case lottery != "":
		if cfg.Lottery.Prizes, err = setup.ParsePrizes(lottery); err != nil {
			return usageErr(stderr, "setup", err)
		}
		if skus != "" {
			return usageErr(stderr, "setup", fmt.Errorf("skus: a lottery's SKUs are its prizes: give --lottery, not --skus"))
		}
		if !noPrizeSet {
			return usageErr(stderr, "setup", fmt.Errorf("no-prize-weight: required with --lottery (0 when every draw picks a prize)"))
		}
		cfg.Lottery.NoPrize = noPrize
		for _, s := range strings.Split(delivered, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.Lottery.Delivered = append(cfg.Lottery.Delivered, s)
			}
		}
	case noPrizeSet:
		return usageErr(stderr, "setup", fmt.Errorf("no-prize-weight: only a lottery has one (give --lottery)"))
	default:
		if delivered != "" {
			return usageErr(stderr, "setup", fmt.Errorf("delivery-skus: only a lottery's prizes are delivered (give --lottery)"))
		}
		if cfg.SKUs, err = setup.ParseSKUs(skus); err != nil {
			return usageErr(stderr, "setup", err)
		}
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
