package scripts_test

import (
	"context"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashgate/flashgate/internal/testenv"
)

// The dev stack's ACL users (scripts/redis-users.acl) and their dev passwords.
var devPassword = map[string]string{
	"flashgate-gateway": "flashgate-gateway-dev",
	"flashgate-settler": "flashgate-settler-dev",
	"flashgate-riskctl": "flashgate-riskctl-dev",
	"flashgate-bench":   "flashgate-bench-dev",
}

// What each binary sends from Go (besides the scripts): a change that sends a new
// command must add it here and to scripts/redis-users.acl.
var goCommands = map[string][]string{
	"flashgate-gateway": {"PING", "INFO", "TIME", "MULTI", "EXEC", "DISCARD", "EVALSHA", "EVAL", "SCRIPT|LOAD",
		"GET", "SET", "SETNX", "DEL", "EXISTS", "RENAME", "HGET", "HMGET", "HSET", "HSETNX", "HDEL", "HGETALL", "HLEN",
		"HEXISTS", "HINCRBY", "SADD", "SREM", "SMEMBERS", "XRANGE", "XINFO|STREAM", "PUBLISH", "SUBSCRIBE"},
	"flashgate-settler": {"PING", "INFO", "TIME", "MULTI", "EXEC", "DISCARD", "EVALSHA", "EVAL", "SCRIPT|LOAD",
		"GET", "SET", "SETNX", "DEL", "EXISTS", "RENAME", "HGET", "HMGET", "HSET", "HSETNX", "HDEL", "HEXISTS",
		"HGETALL", "HINCRBY", "SADD", "SMEMBERS", "XRANGE", "XLEN", "XDEL", "XINFO|STREAM"},
	"flashgate-riskctl": {"PING", "GET", "SET", "DEL", "PTTL", "HGET", "HGETALL", "HSET", "HDEL", "ZADD", "ZREM",
		"ZRANGEBYSCORE", "ZREMRANGEBYSCORE", "WATCH", "UNWATCH", "MULTI", "EXEC", "DISCARD"},
	"flashgate-bench": {"PING", "GET", "HGET", "HMGET", "HGETALL", "HLEN", "HKEYS", "SMEMBERS", "XLEN", "XRANGE"},
}

// The scripts each binary runs: every command a script calls is checked against the
// user running it, because Redis applies ACLs inside Lua too.
var scriptsOf = map[string][]string{
	"flashgate-gateway": {"claim", "void", "durable", "fence", "lease", "rebuild", "unfence", "warm", "budget",
		"push", "codes", "unhold"},
	"flashgate-settler": {"confirm", "durable", "void", "release", "fence", "lease", "rebuild", "unfence", "unhold"},
}

// Commands no flashgate user may run, whatever the key.
var denied = [][]string{
	{"FLUSHALL"}, {"FLUSHDB"}, {"KEYS", "*"}, {"SCAN", "0"}, {"CONFIG", "GET", "*"}, {"CONFIG", "SET", "appendonly", "no"},
	{"DEBUG", "SLEEP", "0"}, {"SHUTDOWN"}, {"ACL", "LIST"}, {"ACL", "SETUSER", "x"}, {"MONITOR"}, {"SAVE"}, {"BGSAVE"},
	{"BGREWRITEAOF"}, {"REPLICAOF", "NO", "ONE"}, {"CLIENT", "KILL", "ID", "1"}, {"SCRIPT", "FLUSH"}, {"FUNCTION", "FLUSH"},
	{"MODULE", "LIST"}, {"MIGRATE", "127.0.0.1", "1", "fg:x", "0", "1"}, {"PUBLISH", "c", "m"}, {"SUBSCRIBE", "c"},
	{"SELECT", "1"}, {"SWAPDB", "0", "1"}, {"RESTORE", "fg:x", "0", "x"}, {"OBJECT", "ENCODING", "fg:x"},
}

// dryrun asks the server (as the default user; nothing is executed) whether user may
// run args. "" means allowed.
func dryrun(t *testing.T, admin *redis.Client, user string, args []string) string {
	t.Helper()
	a := []any{"ACL", "DRYRUN", user}
	for _, s := range args {
		a = append(a, s)
	}
	res, err := admin.Do(context.Background(), a...).Text()
	if err != nil {
		if strings.Contains(err.Error(), "User '"+user+"' not found") {
			t.Fatalf("ACL user %s is not loaded: run `make up` (scripts/stack.sh loads scripts/redis-users.acl)", user)
		}
		return err.Error()
	}
	if res == "OK" {
		return ""
	}
	return res
}

// sample gives a command well-formed arguments with key k, for ACL DRYRUN (which checks
// arity before permissions).
func sample(cmd, k string) []string {
	switch cmd {
	case "PING", "TIME", "MULTI", "EXEC", "DISCARD", "UNWATCH":
		return []string{cmd}
	case "INFO":
		return []string{"INFO", "server"}
	case "EVALSHA":
		return []string{"EVALSHA", "0000000000000000000000000000000000000000", "1", k}
	case "EVAL":
		return []string{"EVAL", "return 1", "1", k}
	case "PUBLISH": // the one channel a user may use; the key is not a channel
		return []string{cmd, "fg:changes", "m"}
	case "SUBSCRIBE":
		return []string{cmd, "fg:changes"}
	case "XINFO|STREAM":
		return []string{"XINFO", "STREAM", k}
	case "SCRIPT|LOAD":
		return []string{"SCRIPT", "LOAD", "return 1"}
	case "GET", "DEL", "EXISTS", "HGETALL", "HLEN", "HKEYS", "SMEMBERS", "XLEN", "ZCARD", "PTTL", "MGET", "SCARD", "WATCH":
		return []string{cmd, k}
	case "SET", "SETNX":
		return []string{cmd, k, "v"}
	case "RENAME":
		return []string{cmd, k, k + ":2"}
	case "PEXPIRE":
		return []string{cmd, k, "1000"}
	case "HGET", "HMGET", "HDEL", "HEXISTS":
		return []string{cmd, k, "f"}
	case "HSET", "HSETNX", "HINCRBY":
		return []string{cmd, k, "f", "1"}
	case "SPOP":
		return []string{cmd, k}
	case "SADD", "SREM", "SISMEMBER", "ZREM":
		return []string{cmd, k, "m"}
	case "XADD":
		return []string{cmd, k, "*", "f", "v"}
	case "XDEL":
		return []string{cmd, k, "0-1"}
	case "XRANGE":
		return []string{cmd, k, "-", "+"}
	case "ZADD":
		return []string{cmd, k, "1", "m"}
	case "ZCOUNT", "ZRANGEBYSCORE", "ZREMRANGEBYSCORE":
		return []string{cmd, k, "0", "1"}
	}
	return nil
}

var luaCall = regexp.MustCompile(`redis\.p?call\(\s*['"]([A-Za-z]+)['"]`)

func luaCommands(t *testing.T, script string) []string {
	t.Helper()
	src, err := os.ReadFile(script + ".lua")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range luaCall.FindAllStringSubmatch(string(src), -1) {
		seen[strings.ToUpper(m[1])] = true
	}
	var out []string
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	if len(out) == 0 {
		t.Fatalf("%s.lua: no redis.call found", script)
	}
	return out
}

// TestACLUsersHaveWhatTheyNeed: each user may run every command its binary sends and
// every command of every script it runs, on flashgate's keys.
func TestACLUsersHaveWhatTheyNeed(t *testing.T) {
	admin := testenv.Redis(t)
	const key = "fg:{acl-test}:meta"
	for user, cmds := range goCommands {
		for _, c := range cmds {
			args := sample(c, key)
			if args == nil {
				t.Fatalf("no sample arguments for %s", c)
			}
			if user == "flashgate-riskctl" && len(args) > 1 && c != "SCRIPT|LOAD" {
				args = sample(c, "fg:{risk}:blk:d:x")
			}
			if why := dryrun(t, admin, user, args); why != "" {
				t.Errorf("%s may not %v: %s", user, args, why)
			}
		}
		for _, s := range scriptsOf[user] {
			for _, c := range luaCommands(t, s) {
				args := sample(c, key)
				if args == nil {
					t.Fatalf("%s.lua calls %s: add it to sample() and to the users that run the script", s, c)
				}
				if why := dryrun(t, admin, user, args); why != "" {
					t.Errorf("%s runs %s.lua, which calls %s: %s", user, s, c, why)
				}
			}
		}
	}
	// riskctl reads (never writes) what replay and status read.
	for _, k := range []string{"fg:{c1}:meta", "fg:{c1}:skus", "fg:{c1}:sku:rp-50", "fg:{c1}:rejshadow"} {
		for _, args := range [][]string{{"HGET", k, "f"}, {"SMEMBERS", k}, {"HGETALL", k}} {
			if why := dryrun(t, admin, "flashgate-riskctl", args); why != "" {
				t.Errorf("riskctl may not %v: %s", args, why)
			}
		}
	}
	for _, k := range []string{"fg:{c1}:risk", "fg:{risk}:rules", "fg:{risk}:index", "fg:{risk}:frz:u:x", "fg:{risk}:fw:d:x"} {
		if why := dryrun(t, admin, "flashgate-riskctl", []string{"HSET", k, "f", "1"}); why != "" {
			t.Errorf("riskctl may not write %s: %s", k, why)
		}
	}
}

// TestACLUsersAreRefusedTheRest: dangerous commands, keys outside flashgate's, and
// writes outside a user's own keys are refused.
func TestACLUsersAreRefusedTheRest(t *testing.T) {
	admin := testenv.Redis(t)
	for user := range devPassword {
		for _, args := range denied {
			if dryrun(t, admin, user, args) == "" {
				t.Errorf("%s may run %v", user, args)
			}
		}
		for _, args := range [][]string{{"GET", "other:x"}, {"HGET", "session:1", "f"}, {"SET", "fgx", "1"}, {"EVAL", "return 1", "1", "other:x"}} {
			if dryrun(t, admin, user, args) == "" {
				t.Errorf("%s may run %v (a key outside fg:*)", user, args)
			}
		}
	}
	for _, tc := range []struct {
		user string
		args []string
	}{
		// riskctl: no counters, no idempotency records, no scripts, no writes to campaign state.
		{"flashgate-riskctl", []string{"HSET", "fg:{c1}:meta", "paused", "1"}},
		{"flashgate-riskctl", []string{"HINCRBY", "fg:{c1}:sku:rp-50", "stock", "1"}},
		{"flashgate-riskctl", []string{"GET", "fg:{c1}:rq:r1"}},
		{"flashgate-riskctl", []string{"DEL", "fg:{c1}:outbox"}},
		{"flashgate-riskctl", []string{"EVAL", "return 1", "1", "fg:{risk}:rules"}},
		// bench verify reads only.
		{"flashgate-bench", []string{"SET", "fg:{c1}:meta", "1"}},
		{"flashgate-bench", []string{"HSET", "fg:{c1}:meta", "f", "1"}},
		{"flashgate-bench", []string{"DEL", "fg:{c1}:inflight"}},
		// the settler does not edit the catalog; nobody subscribes or publishes.
		{"flashgate-settler", []string{"SREM", "fg:{c1}:skus", "rp-50"}},
		{"flashgate-gateway", []string{"UNLINK", "fg:{c1}:meta"}},
	} {
		if dryrun(t, admin, tc.user, tc.args) == "" {
			t.Errorf("%s may run %v", tc.user, tc.args)
		}
	}
}

// TestACLUsersLive connects as each user, as the binaries do, and checks the server
// refuses what is outside its set - including inside a script - and allows the rest.
// Only commands harmless when (wrongly) allowed are executed; FLUSHALL and the like are
// checked with ACL DRYRUN above.
func TestACLUsersLive(t *testing.T) {
	admin := testenv.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	outside := testenv.ID(t, "acl-outside")
	if err := admin.Set(ctx, outside, "x", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	mine := "fg:{" + testenv.ID(t, "acl") + "}:meta"
	t.Cleanup(func() { admin.Del(context.Background(), mine, outside) })
	for user, pw := range devPassword {
		c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), Username: user, Password: pw, DialTimeout: 2 * time.Second})
		if err := c.Ping(ctx).Err(); err != nil {
			c.Close()
			t.Fatalf("%s: %v (are the ACL users loaded? run `make up`)", user, err)
		}
		if w, err := c.Do(ctx, "ACL", "WHOAMI").Text(); err == nil {
			t.Errorf("%s may run ACL WHOAMI (%s)", user, w)
		}
		for _, args := range [][]any{{"KEYS", "*"}, {"CONFIG", "GET", "maxmemory"}, {"GET", outside}, {"SCAN", "0"}, {"INFO", "keyspace"}} {
			if user == "flashgate-gateway" || user == "flashgate-settler" {
				if args[0] == "INFO" {
					continue // INFO is theirs (recovery reads run_id)
				}
			}
			err := c.Do(ctx, args...).Err()
			if err == nil || !strings.Contains(err.Error(), "NOPERM") {
				t.Errorf("%s %v: got %v, want NOPERM", user, args, err)
			}
		}
		if wrong := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), Username: user, Password: pw + "x"}); wrong.Ping(ctx).Err() == nil {
			t.Errorf("%s with a wrong password was let in", user)
		} else {
			wrong.Close()
		}
		c.Close()
	}
	// Inside a script: the gateway may touch fg:* but nothing else, and no admin command.
	gw := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(), Username: "flashgate-gateway", Password: devPassword["flashgate-gateway"]})
	defer gw.Close()
	if err := gw.Eval(ctx, `return redis.call('HSET', KEYS[1], 'f', '1')`, []string{mine}).Err(); err != nil {
		t.Errorf("gateway script on its own key: %v", err)
	}
	// The script declares only its own key; the command inside names another (ARGV).
	for _, src := range []string{`return redis.call('GET', ARGV[1])`, `return redis.call('SET', ARGV[1], 'y')`,
		`return redis.call('KEYS', '*')`} {
		err := gw.Eval(ctx, src, []string{mine}, outside).Err()
		if err == nil || !strings.Contains(err.Error(), "The user executing the script can't") {
			t.Errorf("gateway script %q: got %v, want an ACL refusal inside the script", src, err)
		}
	}
	if err := gw.Eval(ctx, `return 1`, []string{outside}).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("gateway script declaring a key outside fg:*: got %v, want NOPERM", err)
	}
	if v, _ := admin.Get(ctx, outside).Result(); v != "x" {
		t.Errorf("the key outside fg:* changed: %q", v)
	}
}
