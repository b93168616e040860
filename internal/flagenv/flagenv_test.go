package flagenv

import (
	"bytes"
	"flag"
	"strings"
	"testing"
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
