// Command riskctl is the risk team's CLI (CONTRACT.md "riskctl"): it shows and changes
// the live risk rules in Redis, blocks and unblocks devices, IPs and users, switches
// shadow mode, and reads the decision log (flash.decisions) to show who is claiming and
// to replay proposed rules against recorded traffic. Every change is audited in
// Postgres in the same step as the Redis write (internal/risk/audit).
//
// Every command has --help and --json, and exits 0 (ok), 1 (failed: a server could not
// be reached or refused) or 2 (usage: bad arguments; nothing was changed).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/flagenv"
	"github.com/flashgate/flashgate/internal/risk"
	"github.com/flashgate/flashgate/internal/store"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `riskctl - live risk rules, blocks and the decision log of flashgate

Usage:
  riskctl rules show [--campaign C]
  riskctl rules set [--campaign C] key=value ...     (e.g. device.max=3 device.window=60s)
  riskctl block device|ip|user VALUE [--ttl 24h] --reason TEXT
  riskctl block list [device|ip|user]                 (blocks and auto-freezes in force)
  riskctl unblock device|ip|user VALUE               (lifts a block and a freeze)
  riskctl revoke user|device VALUE --reason TEXT      (voids unredeemed vouchers, budget back)
  riskctl shadow on|off [--campaign C]               (evaluate and log, do not enforce)
  riskctl top devices|ips|users [--campaign C] [--since 10m]
  riskctl top points [--since 10m]                   (points gained, auto-freeze hits)
  riskctl audit [--since 24h]
  riskctl replay --rules FILE [--campaign C] [--since 1h]
  riskctl points freeze|unfreeze USER --reason TEXT  (a points account: spends nothing)

Every command takes --help, --json, and the connection flags --redis-addr, --redis-user,
--pg-url, --kafka-brokers (env FLASH_REDIS_ADDR, FLASH_REDIS_USERNAME, FLASH_PG_URL, FLASH_KAFKA_BROKERS;
the Redis password from FLASH_REDIS_PASSWORD only). Changes are audited with
--actor (default: FLASH_ACTOR, else the OS user). Exit codes: 0 ok, 1 failed, 2 usage.
Rule keys: ` + "device.max device.window ip.max ip.window user.max user.window freeze.max freeze.window freeze.for shadow" + `
(docs/RISK.md describes each).
`

// usageError is a mistake in the command line: exit 2, nothing changed.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// cmd is one subcommand's context: its flags, output and lazily opened connections.
type cmd struct {
	name           string
	fs             *flag.FlagSet
	stdout, stderr io.Writer
	help           string

	redisAddr, pgURL, brokers string
	redisAuth                 flagenv.RedisAuth
	json                      bool
	actor                     string
	timeout                   time.Duration

	ctx    context.Context
	rdb    *redis.Client
	pg     *pgxpool.Pool
	envErr error
}

func newCmd(ctx context.Context, name, help string, stdout, stderr io.Writer, writes bool) *cmd {
	c := &cmd{name: name, help: help, stdout: stdout, stderr: stderr, ctx: ctx}
	c.fs = flag.NewFlagSet("riskctl "+name, flag.ContinueOnError)
	c.fs.SetOutput(io.Discard)
	fe := flagenv.New(c.fs)
	fe.RedisAddr(&c.redisAddr, "Redis address (live rules, blocks)")
	fe.RedisAuth(&c.redisAuth)
	fe.PGURL(&c.pgURL, "Postgres URL (audit)")
	fe.KafkaBrokers(&c.brokers, "Kafka brokers, comma-separated (decision log)")
	// riskctl's names before the connection flags had one name in every binary.
	fe.Deprecated("redis", flagenv.RedisAddrFlag)
	fe.Deprecated("pg", flagenv.PGURLFlag)
	fe.Deprecated("brokers", flagenv.KafkaBrokersFlag)
	fe.SetWarnings(stderr)
	fe.Duration(&c.timeout, "timeout", "FLASH_RISKCTL_TIMEOUT", 30*time.Second, "give up after this long")
	c.fs.BoolVar(&c.json, "json", false, "print the result as JSON")
	if writes {
		c.fs.StringVar(&c.actor, "actor", "", "who makes the change, for the audit (default: FLASH_ACTOR, else the OS user)")
	}
	if err := fe.Parse(nil); err != nil {
		// Bad FLASH_* environment: reported when the command parses its arguments.
		c.envErr = err
	}
	return c
}

// parse parses flags wherever they appear among the positional arguments, and
// returns the positional ones. --help returns flag.ErrHelp.
func (c *cmd) parse(args []string) ([]string, error) {
	if c.envErr != nil {
		return nil, usagef("%v", c.envErr)
	}
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if c.actor == "" && c.fs.Lookup("actor") != nil {
		c.actor = os.Getenv("FLASH_ACTOR")
		if c.actor == "" {
			c.actor = osUser()
		}
	}
	var cancel context.CancelFunc
	c.ctx, cancel = context.WithTimeout(c.ctx, c.timeout)
	_ = cancel // released when the process exits; commands are short-lived
	return pos, nil
}

func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

func (c *cmd) printHelp() {
	fmt.Fprintln(c.stdout, strings.TrimSpace(c.help))
	fmt.Fprintln(c.stdout, "\nFlags:")
	c.fs.SetOutput(c.stdout)
	c.fs.PrintDefaults()
	c.fs.SetOutput(io.Discard)
}

func (c *cmd) redis() (*redis.Client, error) {
	if c.rdb != nil {
		return c.rdb, nil
	}
	rdb := c.redisAuth.NewClient(&redis.Options{Addr: c.redisAddr, DialTimeout: 2 * time.Second,
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, MaxRetries: 1})
	if err := rdb.Ping(c.ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", c.redisAddr, err)
	}
	c.rdb = rdb
	return rdb, nil
}

func (c *cmd) postgres() (*pgxpool.Pool, error) {
	if c.pg != nil {
		return c.pg, nil
	}
	pg, err := store.Open(c.ctx, c.pgURL, 2)
	if err != nil {
		return nil, err
	}
	if err := store.Prepare(c.ctx, pg); err != nil {
		pg.Close()
		return nil, err
	}
	c.pg = pg
	return pg, nil
}

func (c *cmd) close() {
	if c.rdb != nil {
		c.rdb.Close()
	}
	if c.pg != nil {
		c.pg.Close()
	}
}

// out prints v as JSON with --json, else calls text.
func (c *cmd) out(v any, text func(w io.Writer)) {
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	text(c.stdout)
}

type command struct {
	help string
	// writes: the command changes state (it takes --actor).
	writes bool
	// run registers the command's own flags, calls c.parse and does the work.
	run func(c *cmd, args []string) error
}

var commands = map[string]command{
	"rules show": {help: rulesShowHelp, run: rulesShow},
	"rules set":  {help: rulesSetHelp, writes: true, run: rulesSet},
	"block":      {help: blockHelp, writes: true, run: block},
	"unblock":    {help: unblockHelp, writes: true, run: unblock},
	"revoke":     {help: revokeHelp, writes: true, run: revoke},
	"shadow":     {help: shadowHelp, writes: true, run: shadow},
	"top":        {help: topHelp, run: top},
	"audit":      {help: auditHelp, run: auditCmd},
	"replay":     {help: replayHelp, run: replay},
	// The points mall (riskctl/points.go).
	"points freeze":   {help: pointsFreezeHelp, writes: true, run: pointsFreeze(true)},
	"points unfreeze": {help: pointsFreezeHelp, writes: true, run: pointsFreeze(false)},
}

// run is riskctl with its arguments; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) == 0 {
			fmt.Fprint(stderr, usage)
			return exitUsage
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	name, rest := args[0], args[1:]
	if name == "points" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = "points "+rest[0], rest[1:]
	}
	if name == "rules" {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			if len(rest) > 0 && isHelp(rest[0]) {
				fmt.Fprint(stdout, rulesShowHelp+"\n"+rulesSetHelp)
				return exitOK
			}
			fmt.Fprintln(stderr, "riskctl rules: want show or set\n\n"+rulesShowHelp+"\n"+rulesSetHelp)
			return exitUsage
		}
		name, rest = "rules "+rest[0], rest[1:]
	}
	cm, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "riskctl: unknown command %q\n\n%s", name, usage)
		return exitUsage
	}
	c := newCmd(ctx, name, cm.help, stdout, stderr, cm.writes)
	defer c.close()
	err := cm.run(c, rest)
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp()
		return exitOK
	}
	if err == nil {
		return exitOK
	}
	var ue *usageError
	code := exitFailed
	kind := "failed"
	if errors.As(err, &ue) || risk.IsFieldError(err) {
		code, kind = exitUsage, "usage"
	}
	fmt.Fprintf(stderr, "riskctl %s: %v\n", name, err)
	if code == exitUsage {
		fmt.Fprintf(stderr, "Run 'riskctl %s --help' for usage.\n", name)
	}
	if c.json {
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(map[string]string{"error": kind, "message": err.Error()})
	}
	return code
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "-help" || s == "--h" }

// campaignFlag registers --campaign.
func campaignFlag(c *cmd) *string {
	return c.fs.String("campaign", "", "campaign id (default: the global rules)")
}

func checkCampaign(id string) error {
	if id != "" && !risk.ValidID(id) {
		return usagef("--campaign %q: not a campaign id (1-64 characters of [A-Za-z0-9._:-])", id)
	}
	return nil
}

func scopeOf(campaign string) string {
	if campaign == "" {
		return "global"
	}
	return "campaign:" + campaign
}
