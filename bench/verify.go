package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/bench/record"
	"github.com/flashgate/flashgate/bench/verify"
	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/store"
)

func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("verify", "verify --campaign C [--record DIR] [--wait 60s] [flags]", stdout, stderr)
	fe := flagenv.New(fs)
	var (
		redisAddr, pgURL, campaign, recordPath, schema string
		wait                                           time.Duration
		asJSON                                         bool
	)
	fe.RedisAddr(&redisAddr, "Redis address")
	var redisAuth flagenv.RedisAuth
	fe.RedisAuth(&redisAuth)
	fe.PGURL(&pgURL, "Postgres URL")
	fs.StringVar(&campaign, "campaign", "", "campaign to verify (required)")
	fs.StringVar(&recordPath, "record", "", "bench's record of 200s: a run's output folder or its accepted.jsonl (without it the record checks are skipped)")
	fs.DurationVar(&wait, "wait", 60*time.Second, "how long to wait for settlement (the campaign's in-flight claims in Redis to reach 0)")
	fs.StringVar(&schema, "pg-schema", "", "read the tables from this Postgres schema (a restored backup or a copy) instead of the search path")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if code, stop := parse(fs, fe.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "verify", errUnexpectedArgs(fs.Args()))
	}
	if campaign == "" {
		return usageErr(stderr, "verify", fmt.Errorf("--campaign is required"))
	}
	if wait < 0 {
		return usageErr(stderr, "verify", fmt.Errorf("--wait %s: must not be negative", wait))
	}
	cfg := verify.Config{Campaign: campaign, Wait: wait, Schema: schema}
	if recordPath != "" {
		entries, err := record.Read(recordPath)
		if err != nil {
			return usageErr(stderr, "verify", err)
		}
		if entries == nil {
			entries = []record.Entry{}
		}
		cfg.Record = entries
	}
	rdb := redisAuth.NewClient(&redis.Options{Addr: redisAddr, DialTimeout: 3 * time.Second, ReadTimeout: 10 * time.Second})
	defer rdb.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		return failed(stderr, "verify", fmt.Errorf("redis %s: %w", redisAddr, err))
	}
	pg, err := store.Open(ctx, pgURL, 4)
	if err != nil {
		return failed(stderr, "verify", err)
	}
	defer pg.Close()
	vctx, vcancel := context.WithTimeout(ctx, wait+5*time.Minute)
	defer vcancel()
	rep, err := verify.Run(vctx, rdb, pg, cfg)
	if errors.Is(err, verify.ErrUnknownCampaign) {
		return usageErr(stderr, "verify", err)
	}
	if err != nil {
		return failed(stderr, "verify", err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		rep.Print(stdout)
	}
	if !rep.Held {
		return exitViolated
	}
	return exitHeld
}
