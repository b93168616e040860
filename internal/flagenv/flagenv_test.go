package flagenv

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// A password in the environment must not be printed by -help or by the usage a bad flag
// prints, while the flag still carries it.
func TestHelpRedactsPasswords(t *testing.T) {
	const secret = "s3cr3t-Pg-pw"
	t.Setenv("FLASH_TEST_PG_URL", "postgres://flashgate:"+secret+"@127.0.0.1:15432/flashgate?sslmode=disable")
	t.Setenv("FLASH_TEST_DSN", "host=127.0.0.1 password="+secret+" dbname=x")
	t.Setenv("FLASH_REDIS_USERNAME", "flashgate-gateway")
	t.Setenv("FLASH_REDIS_PASSWORD", secret)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	var pgURL, dsn string
	var auth RedisAuth
	s := New(fs)
	s.String(&pgURL, "pg-url", "FLASH_TEST_PG_URL", DefaultPGURL, "Postgres URL")
	s.String(&dsn, "dsn", "FLASH_TEST_DSN", "", "a key/value connection string")
	s.RedisAuth(&auth)
	if err := s.Parse([]string{"-no-such-flag"}); err == nil {
		t.Fatal("an unknown flag parsed")
	}
	fs.PrintDefaults()
	if strings.Contains(out.String(), secret) {
		t.Fatalf("usage printed the password:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "postgres://flashgate:xxxxx@127.0.0.1:15432") || !strings.Contains(out.String(), "password=xxxxx") {
		t.Fatalf("usage does not show the redacted defaults:\n%s", out.String())
	}
	if !strings.Contains(pgURL, secret) || !strings.Contains(dsn, secret) {
		t.Fatalf("the flags lost their values: %q %q", pgURL, dsn)
	}
	if auth.Username != "flashgate-gateway" || auth.Password != secret {
		t.Fatalf("RedisAuth = %+v", auth)
	}
	if fs.Lookup("redis-password") != nil {
		t.Fatal("the Redis password must not be a flag (it would show in the process list)")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:pw@h:5432/db?sslmode=disable": "postgres://u:xxxxx@h:5432/db?sslmode=disable",
		"postgres://u@h/db":                         "postgres://u@h/db",
		"127.0.0.1:16379":                           "127.0.0.1:16379",
		"host=h password='a b' user=u":              "host=h password=xxxxx user=u",
		"":                                          "",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedisSentinelSettings(t *testing.T) {
	t.Setenv("FLASH_REDIS_SENTINELS", "127.0.0.1:26379, 127.0.0.1:26380,,127.0.0.1:26381")
	t.Setenv("FLASH_REDIS_PASSWORD", "pw")
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var a RedisAuth
	New(fs).RedisAuth(&a)
	if err := fs.Parse([]string{"-redis-master", "mymaster", "-redis-user", "u"}); err != nil {
		t.Fatal(err)
	}
	rdb := a.NewClient(&redis.Options{Addr: "127.0.0.1:1", PoolSize: 7})
	defer rdb.Close()
	o := rdb.Options()
	// go-redis's failover client names its address "FailoverClient" and dials the
	// primary the Sentinels report.
	if o.Addr != "FailoverClient" || o.Username != "u" || o.Password != "pw" || o.PoolSize != 7 {
		t.Fatalf("with sentinels: addr %q user %q pool %d; want a failover client as u with pool 7", o.Addr, o.Username, o.PoolSize)
	}
	if a.Master != "mymaster" {
		t.Fatalf("master %q", a.Master)
	}

	t.Setenv("FLASH_REDIS_SENTINELS", "")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	var b RedisAuth
	New(fs).RedisAuth(&b)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	plain := b.NewClient(&redis.Options{Addr: "127.0.0.1:16379"})
	defer plain.Close()
	if o := plain.Options(); o.Addr != "127.0.0.1:16379" || b.Master != DefaultRedisMaster {
		t.Fatalf("without sentinels: addr %q master %q; want the address and the default master", o.Addr, b.Master)
	}
}

// The connection flags have one name; an old name still sets the flag, and says once
// that it is deprecated.
func TestDeprecatedAliasSetsTheFlagAndSaysSo(t *testing.T) {
	t.Setenv("FLASH_REDIS_ADDR", "")
	fs := flag.NewFlagSet("settler", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	var warn bytes.Buffer
	s := New(fs)
	s.SetWarnings(&warn)
	var addr string
	s.RedisAddr(&addr, "Redis address")
	s.Deprecated("redis", RedisAddrFlag)
	if err := s.Parse(nil); err != nil || addr != DefaultRedisAddr || warn.Len() != 0 {
		t.Fatalf("no flags: %v, addr %q, notice %q; want the default and no notice", err, addr, warn.String())
	}
	if err := s.Parse([]string{"-redis", "10.0.0.1:6379"}); err != nil {
		t.Fatal(err)
	}
	if addr != "10.0.0.1:6379" {
		t.Fatalf("-redis set addr to %q, want 10.0.0.1:6379", addr)
	}
	if got, want := warn.String(), "settler: flag -redis is deprecated, use -redis-addr (the old name goes in the next release)\n"; got != want {
		t.Fatalf("notice %q, want %q", got, want)
	}
	warn.Reset()
	if err := s.Parse([]string{"-redis-addr", "10.0.0.2:6379"}); err != nil || addr != "10.0.0.2:6379" || warn.Len() != 0 {
		t.Fatalf("-redis-addr: %v, addr %q, notice %q; want 10.0.0.2:6379 and no notice", err, addr, warn.String())
	}
}
