package settle

import (
	"fmt"
	"strings"
	"time"

	"github.com/flashgate/flashgate/internal/kafkaopt"
)

// Config tunes a Settler. Zero values of the tuning fields are replaced by the defaults
// below in New; an invalid value is an error naming the field, and New builds nothing.
type Config struct {
	// Brokers are the seed brokers of the Kafka cluster holding flash.claims.
	Brokers []string
	// Topic is the topic of accepted claims: kafkaopt.ClaimsTopic (flash.claims) unless
	// a deployment or a test isolates its own.
	Topic string
	// RejectTopic is where records that are not storable claims of a known campaign are
	// set aside (reject.go): Topic + ".rejected" unless set (kafkaopt.ClaimsRejectedTopic
	// for flash.claims).
	RejectTopic string
	// RejectTimeout bounds one produce of set-aside records to RejectTopic.
	RejectTimeout time.Duration
	// Group is the consumer group. Offsets committed under it are where a restarted
	// settler resumes; a group with no committed offsets starts at the oldest record.
	Group string
	// SessionTimeout is how long the group waits for a silent member before it gives
	// that member's partitions to the others. After a kill -9 nothing settles the dead
	// member's partitions (and a restarted settler cannot finish joining) until it
	// passes, so it is shorter than franz-go's 45 s default; heartbeats go every 3 s.
	SessionTimeout time.Duration
	// MaxBatch is the most records one batch settles (one Postgres transaction, one
	// offset commit).
	MaxBatch int
	// Writers is how many batches of one poll are settled concurrently, each in its own
	// confirm call, Postgres transaction and cleanup. A poll takes up to MaxBatch ×
	// Writers records; its offsets are committed once every one of its batches has
	// committed in Postgres, so no offset ever passes an unwritten claim.
	Writers int
	// PollWait is how long the broker holds a fetch open waiting for records: the
	// longest a quiet settler waits before it settles what it has.
	PollWait time.Duration
	// FetchMinBytes is how many bytes of records the broker gathers before it answers a
	// fetch early; short of it, the fetch is answered after PollWait with whatever there
	// is. 1 answers as soon as any record exists (franz-go's default), so at moderate
	// rates every poll is tiny and pays a fetch, a confirm call, a Postgres transaction
	// and a cleanup of its own; a larger value trades up to PollWait of lag for fewer,
	// fuller polls. The lag bound stays PollWait either way.
	FetchMinBytes int
	// RetryMin and RetryMax bound the backoff between attempts when Redis or Postgres
	// fails; the wait doubles from RetryMin up to RetryMax and the batch is retried for
	// as long as it takes.
	RetryMin, RetryMax time.Duration
	// RedisTimeout bounds one Redis call (a confirm script, the cleanup pipeline).
	RedisTimeout time.Duration
	// PGTimeout bounds one Postgres transaction.
	PGTimeout time.Duration
	// DrainTimeout is how long the batch in hand may still take to settle and commit
	// after Run's context is cancelled (SIGTERM). Past it the batch is abandoned
	// uncommitted and is redelivered to the next settler.
	DrainTimeout time.Duration
	// VoidAfter is the deadline of a claim read from Kafka while its record is still A
	// (the gateway has not marked it durable, nor voided it): the batch waits for the
	// mark, and once the claim is VoidAfter old (by its claimed_at) voids it instead of
	// writing it - its client was, or will be, answered 503. It should exceed the
	// gateway's ack timeout plus its Redis timeout (the longest a live gateway takes to
	// mark or void), like the relay's MinAge.
	VoidAfter time.Duration
	// Points, when set, spends the held points of the points_item claims each batch
	// wrote (points.go; internal/points.Holds). Nil: the points sweep alone does it.
	Points PointsConfirmer
}

// Defaults applied by New to zero fields. MaxBatch and Writers are the fastest pair
// BenchmarkSettlePath found (batches of 1000, four in flight: DESIGN.md, The settler).
const (
	DefaultSessionTimeout = 10 * time.Second
	DefaultMaxBatch       = 1000
	DefaultWriters        = 4
	DefaultPollWait       = 100 * time.Millisecond
	DefaultFetchMinBytes  = 256 << 10
	DefaultRetryMin       = 50 * time.Millisecond
	DefaultRetryMax       = 5 * time.Second
	DefaultRedisTimeout   = 2 * time.Second
	DefaultPGTimeout      = 10 * time.Second
	DefaultDrainTimeout   = 15 * time.Second
	DefaultRejectTimeout  = 10 * time.Second
	DefaultVoidAfter      = 15 * time.Second
)

// The catalog cache (reject.go): an entry is reloaded after catalogTTL, and at most
// catalogMax campaigns are held.
const (
	catalogTTL = 30 * time.Second
	catalogMax = 10_000
)

// maxBatchLimit keeps one batch inside Postgres' 65535 bind parameters even for the
// multi-row VALUES writer (14 per claim) and bounds one confirm script's KEYS.
const maxBatchLimit = 4000

// maxFetchMinBytes is franz-go's default FetchMaxPartitionBytes (1 MiB): a single
// partition's answer is never larger, so more could never be met before PollWait.
const maxFetchMinBytes = 1 << 20

// maxWriters bounds the concurrent batches (and Postgres connections) of one settler.
const maxWriters = 32

// ConfigError says which field of Config is wrong and why.
type ConfigError struct {
	Field string
	Msg   string
}

func (e *ConfigError) Error() string { return "settler config: " + e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Validate reports the first invalid field of cfg (with defaults applied to zero
// fields), as New would, without building anything.
func (cfg Config) Validate() error {
	_, err := cfg.withDefaults()
	return err
}

// withDefaults returns cfg with defaults applied, or the first invalid field.
func (cfg Config) withDefaults() (Config, error) {
	def := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if cfg.Topic == "" {
		cfg.Topic = kafkaopt.ClaimsTopic
	}
	if cfg.RejectTopic == "" {
		cfg.RejectTopic = cfg.Topic + ".rejected"
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.Writers == 0 {
		cfg.Writers = DefaultWriters
	}
	if cfg.FetchMinBytes == 0 {
		cfg.FetchMinBytes = DefaultFetchMinBytes
	}
	def(&cfg.SessionTimeout, DefaultSessionTimeout)
	def(&cfg.PollWait, DefaultPollWait)
	def(&cfg.RetryMin, DefaultRetryMin)
	def(&cfg.RetryMax, DefaultRetryMax)
	def(&cfg.RedisTimeout, DefaultRedisTimeout)
	def(&cfg.PGTimeout, DefaultPGTimeout)
	def(&cfg.DrainTimeout, DefaultDrainTimeout)
	def(&cfg.RejectTimeout, DefaultRejectTimeout)
	def(&cfg.VoidAfter, DefaultVoidAfter)

	if len(cfg.Brokers) == 0 {
		return cfg, fieldErr("Brokers", "at least one broker address is required")
	}
	for i, b := range cfg.Brokers {
		if strings.TrimSpace(b) == "" || !strings.Contains(b, ":") {
			return cfg, fieldErr(fmt.Sprintf("Brokers[%d]", i), "%q is not a host:port address", b)
		}
	}
	switch {
	case !validTopic(cfg.Topic):
		return cfg, fieldErr("Topic", "%q: 1..249 characters of [A-Za-z0-9._-]", cfg.Topic)
	case !validTopic(cfg.RejectTopic) || cfg.RejectTopic == cfg.Topic:
		return cfg, fieldErr("RejectTopic", "%q: 1..249 characters of [A-Za-z0-9._-], not the claims topic", cfg.RejectTopic)
	case cfg.RejectTimeout < time.Millisecond:
		return cfg, fieldErr("RejectTimeout", "must be at least 1ms, got %s", cfg.RejectTimeout)
	case strings.TrimSpace(cfg.Group) == "":
		return cfg, fieldErr("Group", "a consumer group name is required")
	case len(cfg.Group) > 249 || strings.ContainsAny(cfg.Group, " \t\r\n"):
		return cfg, fieldErr("Group", "%q: at most 249 characters, no whitespace", cfg.Group)
	case cfg.SessionTimeout < 6*time.Second || cfg.SessionTimeout > 5*time.Minute:
		// Brokers refuse sessions shorter than group.min.session.timeout.ms (6 s).
		return cfg, fieldErr("SessionTimeout", "must be 6s..5m, got %s", cfg.SessionTimeout)
	case cfg.MaxBatch < 1 || cfg.MaxBatch > maxBatchLimit:
		return cfg, fieldErr("MaxBatch", "must be 1..%d, got %d", maxBatchLimit, cfg.MaxBatch)
	case cfg.Writers < 1 || cfg.Writers > maxWriters:
		return cfg, fieldErr("Writers", "must be 1..%d, got %d", maxWriters, cfg.Writers)
	case cfg.PollWait < time.Millisecond || cfg.PollWait > 10*time.Second:
		return cfg, fieldErr("PollWait", "must be 1ms..10s, got %s", cfg.PollWait)
	case cfg.FetchMinBytes < 1 || cfg.FetchMinBytes > maxFetchMinBytes:
		return cfg, fieldErr("FetchMinBytes", "must be 1..%d (1 MiB), got %d", maxFetchMinBytes, cfg.FetchMinBytes)
	case cfg.RetryMin < time.Millisecond:
		return cfg, fieldErr("RetryMin", "must be at least 1ms, got %s", cfg.RetryMin)
	case cfg.RetryMax < cfg.RetryMin:
		return cfg, fieldErr("RetryMax", "must be at least RetryMin (%s), got %s", cfg.RetryMin, cfg.RetryMax)
	case cfg.RetryMax > 5*time.Minute:
		return cfg, fieldErr("RetryMax", "must be at most 5m, got %s", cfg.RetryMax)
	case cfg.RedisTimeout < time.Millisecond:
		return cfg, fieldErr("RedisTimeout", "must be at least 1ms, got %s", cfg.RedisTimeout)
	case cfg.PGTimeout < time.Millisecond:
		return cfg, fieldErr("PGTimeout", "must be at least 1ms, got %s", cfg.PGTimeout)
	case cfg.DrainTimeout < 0:
		return cfg, fieldErr("DrainTimeout", "must not be negative, got %s", cfg.DrainTimeout)
	case cfg.VoidAfter < 100*time.Millisecond || cfg.VoidAfter > 10*time.Minute:
		return cfg, fieldErr("VoidAfter", "must be 100ms..10m, got %s", cfg.VoidAfter)
	}
	return cfg, nil
}

// validTopic applies Kafka's rule for topic names.
func validTopic(t string) bool {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
