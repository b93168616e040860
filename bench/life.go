package main

import (
	"context"
	"io"
	"time"

	"github.com/flashgate/flashgate/bench/life"
	"github.com/flashgate/flashgate/internal/flagenv"
)

// cmdLife plays a voucher's life after the sale (bench/life): redeem against orders,
// refund, transfer, and the review per tier and channel.
func cmdLife(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("life", "life --campaign C --business-line B [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var cfg life.Config
	fe.String(&cfg.Target, "target", "FLASH_BENCH_TARGET", "http://127.0.0.1:8080", "the gateway's public base URL")
	fe.String(&cfg.Admin, "admin", "FLASH_BENCH_ADMIN", "http://127.0.0.1:8081", "the gateway's admin API base URL")
	cfg.AdminToken = fe.Secret("FLASH_ADMIN_TOKEN")
	cfg.UserSecret = fe.Secret("FLASH_USER_TOKEN_SECRET")
	fs.StringVar(&cfg.Campaign, "campaign", "", "campaign id to create for the voucher's life (required)")
	fs.StringVar(&cfg.BusinessLine, "business-line", "", "business line id to create for it (required)")
	fs.IntVar(&cfg.Holders, "holders", 20, "users who claim one voucher each (even, 4..1000): half redeem, half transfer")
	fs.DurationVar(&cfg.Settle, "settle", time.Minute, "longest wait for the claims to become rows")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "life", errUnexpectedArgs(fs.Args()))
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(stderr, "life", err)
	}
	cfg.Log = stdout
	if _, err := life.Run(ctx, cfg); err != nil {
		return failed(stderr, "life", err)
	}
	return exitHeld
}
