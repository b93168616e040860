// Package flagenv owns flashgate's configuration convention: every setting is a flag
// with full help text and a FLASH_* environment twin. The environment sets the default;
// a flag given on the command line wins. Secrets are read from the environment only.
package flagenv

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The shared settings of CONTRACT.md, with the dev stack's addresses as defaults so a
// new user needs no configuration. The ports are the ones scripts/stack.sh uses.
const (
	DefaultRedisAddr    = "127.0.0.1:16379"
	DefaultKafkaBrokers = "127.0.0.1:19092"
	DefaultPGURL        = "postgres://flashgate:flashgate@127.0.0.1:15432/flashgate?sslmode=disable"
)

// Set registers flags whose defaults come from the environment.
type Set struct {
	fs   *flag.FlagSet
	errs []string
	warn io.Writer
}

// New wraps a FlagSet. Deprecation notices go to standard error.
func New(fs *flag.FlagSet) *Set { return &Set{fs: fs, warn: os.Stderr} }

// SetWarnings sends the one-line deprecation notices to w instead of standard error.
func (s *Set) SetWarnings(w io.Writer) { s.warn = w }

// The connection settings every binary shares have one name each, in every binary
// (STYLE 17), and the environment twins of CONTRACT.md.
const (
	RedisAddrFlag    = "redis-addr"    // FLASH_REDIS_ADDR
	KafkaBrokersFlag = "kafka-brokers" // FLASH_KAFKA_BROKERS
	PGURLFlag        = "pg-url"        // FLASH_PG_URL
)

// RedisAddr registers -redis-addr (FLASH_REDIS_ADDR), the dev stack's Redis by default.
func (s *Set) RedisAddr(p *string, usage string) {
	s.String(p, RedisAddrFlag, "FLASH_REDIS_ADDR", DefaultRedisAddr, usage)
}

// KafkaBrokers registers -kafka-brokers (FLASH_KAFKA_BROKERS), comma-separated seed
// brokers, the dev stack's broker by default.
func (s *Set) KafkaBrokers(p *string, usage string) {
	s.String(p, KafkaBrokersFlag, "FLASH_KAFKA_BROKERS", DefaultKafkaBrokers, usage)
}

// PGURL registers -pg-url (FLASH_PG_URL), the dev stack's Postgres by default (its
// password is redacted from -help).
func (s *Set) PGURL(p *string, usage string) {
	s.String(p, PGURLFlag, "FLASH_PG_URL", DefaultPGURL, usage)
}

// Deprecated registers old as an alias of the flag name, registered before: setting
// -old sets -name and prints one line saying so. Aliases are kept for one release
// after a rename (DESIGN.md "Settings").
func (s *Set) Deprecated(old, name string) {
	s.fs.Func(old, "deprecated: use -"+name, func(v string) error {
		fmt.Fprintf(s.warn, "%s: flag -%s is deprecated, use -%s (the old name goes in the next release)\n", s.fs.Name(), old, name)
		return s.fs.Set(name, v)
	})
}

func (s *Set) lookup(env string) (string, bool) {
	v, ok := os.LookupEnv(env)
	return strings.TrimSpace(v), ok && strings.TrimSpace(v) != ""
}

func (s *Set) usage(usage, env string) string { return usage + " (env " + env + ")" }

// String registers a string flag with an environment twin.
func (s *Set) String(p *string, name, env, def, usage string) {
	if v, ok := s.lookup(env); ok {
		def = v
	}
	s.fs.StringVar(p, name, def, s.usage(usage, env))
	// The default shown by -help and by the usage a bad flag prints comes from the
	// environment: a Postgres URL there carries a password, which must not be printed.
	if f := s.fs.Lookup(name); f != nil {
		f.DefValue = Redact(def)
	}
}

// Redact replaces the password of a URL ("postgres://u:secret@h/db") or of a key/value
// connection string ("password=secret") with xxxxx; anything else is returned as is.
func Redact(v string) string {
	if u, err := url.Parse(v); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return u.Redacted()
		}
	}
	return kvPassword.ReplaceAllString(v, "${1}xxxxx")
}

var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('[^']*'|\S+)`)

// Int registers an int flag with an environment twin.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	if v, ok := s.lookup(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s=%q: not an integer", env, v))
		} else {
			def = n
		}
	}
	s.fs.IntVar(p, name, def, s.usage(usage, env))
}

// Duration registers a duration flag with an environment twin.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v, ok := s.lookup(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s=%q: not a duration (like 250us, 2s)", env, v))
		} else {
			def = d
		}
	}
	s.fs.DurationVar(p, name, def, s.usage(usage, env))
}

// Bool registers a bool flag with an environment twin.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	if v, ok := s.lookup(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s=%q: not a boolean", env, v))
		} else {
			def = b
		}
	}
	s.fs.BoolVar(p, name, def, s.usage(usage, env))
}

// Secret reads a value from the environment only, so it never shows in a process list.
func (s *Set) Secret(env string) string { v, _ := s.lookup(env); return v }

// Parse parses args and reports environment values that did not parse.
func (s *Set) Parse(args []string) error {
	if len(s.errs) > 0 {
		return fmt.Errorf("bad environment: %s", strings.Join(s.errs, "; "))
	}
	return s.fs.Parse(args)
}

// Brokers splits a comma-separated broker list, dropping blanks.
func Brokers(list string) []string {
	var out []string
	for _, b := range strings.Split(list, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// RedisAuth is how a binary reaches Redis beyond its address: the ACL user it connects
// as and its password, and, for a Redis run under Sentinel, the Sentinels to ask and the
// name of the primary they watch. The user is a flag (-redis-user,
// FLASH_REDIS_USERNAME); the passwords are read from FLASH_REDIS_PASSWORD and
// FLASH_REDIS_SENTINEL_PASSWORD only. Both users empty: Redis's default user (the dev
// stack's tests and operators).
type RedisAuth struct {
	Username, Password string
	// Sentinels (-redis-sentinels, FLASH_REDIS_SENTINELS, comma-separated host:port):
	// when set, the binary asks them for the primary named Master and follows its
	// failovers (go-redis's failover client), and the Redis address is not used.
	Sentinels []string
	// Master (-redis-master, FLASH_REDIS_MASTER) is the name the Sentinels monitor.
	Master           string
	SentinelPassword string

	sentinels string
}

// DefaultRedisMaster is the primary's name under the dev stack's Sentinels
// (scripts/stack.sh, REDIS=sentinel).
const DefaultRedisMaster = "flashgate"

// RedisAuth registers -redis-user, -redis-sentinels and -redis-master and reads the
// passwords from the environment; NewClient builds the client from them.
func (s *Set) RedisAuth(a *RedisAuth) {
	s.String(&a.Username, "redis-user", "FLASH_REDIS_USERNAME", "",
		"Redis ACL user to connect as (default: Redis's default user); its password comes from FLASH_REDIS_PASSWORD (environment only)")
	s.String(&a.sentinels, "redis-sentinels", "FLASH_REDIS_SENTINELS", "",
		"Redis Sentinels, comma-separated host:port: when set, the primary is found through them and followed across failovers, and the Redis address is ignored (Sentinel's own password, if any, from FLASH_REDIS_SENTINEL_PASSWORD)")
	s.String(&a.Master, "redis-master", "FLASH_REDIS_MASTER", DefaultRedisMaster,
		"name of the Redis primary the Sentinels monitor (with -redis-sentinels)")
	a.Password = s.Secret("FLASH_REDIS_PASSWORD")
	a.SentinelPassword = s.Secret("FLASH_REDIS_SENTINEL_PASSWORD")
}

// NewClient builds the binary's Redis client from o (its address and tuning) and a:
// the ACL user and password always, and when Sentinels are given, go-redis's failover
// client for the primary named Master with the same tuning - still a *redis.Client,
// so nothing else changes. The one place every binary builds its Redis client.
func (a *RedisAuth) NewClient(o *redis.Options) *redis.Client {
	opts := *o
	opts.Username, opts.Password = a.Username, a.Password
	sentinels := a.Sentinels
	if len(sentinels) == 0 {
		sentinels = Brokers(a.sentinels)
	}
	if len(sentinels) == 0 {
		return redis.NewClient(&opts)
	}
	master := a.Master
	if master == "" {
		master = DefaultRedisMaster
	}
	return redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            master,
		SentinelAddrs:         sentinels,
		SentinelPassword:      a.SentinelPassword,
		Username:              opts.Username,
		Password:              opts.Password,
		DB:                    opts.DB,
		MaxRetries:            opts.MaxRetries,
		MinRetryBackoff:       opts.MinRetryBackoff,
		MaxRetryBackoff:       opts.MaxRetryBackoff,
		DialTimeout:           opts.DialTimeout,
		ReadTimeout:           opts.ReadTimeout,
		WriteTimeout:          opts.WriteTimeout,
		ContextTimeoutEnabled: opts.ContextTimeoutEnabled,
		PoolFIFO:              opts.PoolFIFO,
		PoolSize:              opts.PoolSize,
		PoolTimeout:           opts.PoolTimeout,
		MinIdleConns:          opts.MinIdleConns,
		MaxIdleConns:          opts.MaxIdleConns,
		MaxActiveConns:        opts.MaxActiveConns,
		ConnMaxIdleTime:       opts.ConnMaxIdleTime,
		ConnMaxLifetime:       opts.ConnMaxLifetime,
		Protocol:              opts.Protocol,
		// A replica is never written: claims are decided on the primary only.
		ReplicaOnly: false,
	})
}

// List reads a comma-separated setting, dropping blanks and empty entries.
func List(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}
