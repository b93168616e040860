// Package points is the points mall's accounts (CONTRACT.md "Points accounts"; DESIGN.md
// "Points"). Postgres is the record: tasks (grant sources with caps and a key digest),
// one lot per accepted grant, a ledger whose sum per user is the balance, frozen
// accounts and refused grants. Redis holds each user's hot balance in the user's own
// slot (rkeys.Points), rebuilt from the ledger on demand; a grant is committed in
// Postgres first, then applied to Redis idempotently by grant_id.
package points

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flashgate/flashgate/internal/fielderr"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Limits on what a task and a grant may say.
const (
	// MaxAmount bounds one grant and per_grant_max: more is a typo or an attack.
	MaxAmount = 1_000_000_000
	// MaxLifetime bounds a task's points lifetime.
	MaxLifetime = 10 * 366 * 24 * time.Hour
	// MaxIDLen is the longest user, grant and task id.
	MaxIDLen = 64
	// TaskKeyPrefix starts every task source key (recognisable when leaked).
	TaskKeyPrefix = "fgt_"
	// DefaultTZ is the zone whose calendar days the daily caps count (FLASH_POINTS_TZ).
	DefaultTZ = "Asia/Shanghai"
	// DefaultDailyCap is the overall per-user daily cap across tasks (FLASH_POINTS_DAILY_CAP).
	DefaultDailyCap = 10_000
)

// FieldError is bad input: a 400 naming the field. Nothing was changed.
type FieldError = fielderr.Error

func fieldErr(field, format string, args ...any) error { return fielderr.New(field, format, args...) }

// Refusal is a grant refused by a rule: 409 with Code (grant_ceiling, daily_cap,
// key_reuse). Nothing was granted.
type Refusal struct{ Code, Msg string }

func (e *Refusal) Error() string { return e.Code + ": " + e.Msg }

// Errors the HTTP layer maps to statuses.
var (
	// ErrUnauthorized: no source key, or one no task has (401).
	ErrUnauthorized = errors.New("points: unknown source key")
	// ErrForbidden: the key is another task's (403).
	ErrForbidden = errors.New("points: the key is not this task's source key")
	// ErrNotFound: no such task (404).
	ErrNotFound = errors.New("points: not found")
	// ErrApply: the grant is recorded in Postgres but its Redis apply failed (503); the
	// same request again applies it exactly once.
	ErrApply = errors.New("points: grant recorded, hot balance not updated; retry the same grant")
)

// Config configures the service.
type Config struct {
	// Zone is where the daily caps' calendar days are (default Asia/Shanghai).
	Zone *time.Location
	// DailyCap is the overall per-user daily cap across all tasks (default 10000).
	DailyCap int64
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
	// Registerer takes the service's metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Log takes the auto-freeze's warnings; nil: slog's default.
	Log *slog.Logger
}

// Service is the points accounts.
type Service struct {
	pg      *pgxpool.Pool
	rdb     *redis.Client
	cfg     Config
	refused *prometheus.CounterVec
	granted prometheus.Counter
	// autoFrozen counts the auto-freeze rule's hits by mode (autofreeze.go).
	autoFrozen *prometheus.CounterVec
}

func (s *Service) log() *slog.Logger {
	if s.cfg.Log != nil {
		return s.cfg.Log
	}
	return slog.Default()
}

// New builds the service. rdb may be nil (then grants fail at the Redis apply).
func New(pg *pgxpool.Pool, rdb *redis.Client, cfg Config) (*Service, error) {
	if pg == nil {
		return nil, errors.New("points: a Postgres pool is required")
	}
	if cfg.Zone == nil {
		z, err := time.LoadLocation(DefaultTZ)
		if err != nil {
			return nil, fmt.Errorf("points: zone %s: %w", DefaultTZ, err)
		}
		cfg.Zone = z
	}
	if cfg.DailyCap == 0 {
		cfg.DailyCap = DefaultDailyCap
	}
	if cfg.DailyCap < 0 || cfg.DailyCap > MaxAmount {
		return nil, fmt.Errorf("points: daily cap %d, want 1..%d", cfg.DailyCap, MaxAmount)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{pg: pg, rdb: rdb, cfg: cfg,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashgate_points_grants_refused_total",
			Help: "Points grants refused whole, by reason (grant_ceiling, daily_cap)."}, []string{"reason"}),
		granted: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashgate_points_granted_total",
			Help: "Points granted (sum of accepted grants' amounts)."}),
		autoFrozen: newAutoFrozen(),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{s.refused, s.granted, s.autoFrozen} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("points metrics: %w", err)
			}
		}
	}
	return s, nil
}

// ValidID reports whether id is 1-64 characters of [A-Za-z0-9._:-] (CONTRACT.md ids).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

const idRule = "must be 1-64 characters of [A-Za-z0-9._:-]"

// Day is the calendar day of t in the configured zone, as the daily caps count it.
func (s *Service) Day(t time.Time) string { return t.In(s.cfg.Zone).Format(time.DateOnly) }

// ---- tasks

// TaskPut is the body of PUT /admin/v1/points/tasks/{task}.
type TaskPut struct {
	Name            string `json:"name"`
	PerGrantMax     int64  `json:"per_grant_max"`
	PerUserDailyMax int64  `json:"per_user_daily_max"`
	// Lifetime is how long granted points live ("720h").
	Lifetime  string `json:"lifetime"`
	RotateKey bool   `json:"rotate_key"`
}

// Task is a task as the admin API shows it (never its key).
type Task struct {
	ID              string    `json:"task"`
	Name            string    `json:"name"`
	PerGrantMax     int64     `json:"per_grant_max"`
	PerUserDailyMax int64     `json:"per_user_daily_max"`
	Lifetime        string    `json:"lifetime"`
	KeyRotatedAt    time.Time `json:"key_rotated_at"`
	lifetime        time.Duration
}

// TaskPutResult is the answer of a PUT; Key only when one was issued (shown once).
type TaskPutResult struct {
	Task
	Key     string `json:"key,omitempty"`
	Created bool   `json:"created"`
}

func (p *TaskPut) validate(id string) (time.Duration, error) {
	if !ValidID(id) {
		return 0, fieldErr("task", idRule)
	}
	if p.Name == "" || len(p.Name) > 200 {
		return 0, fieldErr("name", "required, at most 200 characters")
	}
	if p.PerGrantMax < 1 || p.PerGrantMax > MaxAmount {
		return 0, fieldErr("per_grant_max", "must be 1..%d, got %d", MaxAmount, p.PerGrantMax)
	}
	if p.PerUserDailyMax < 1 || p.PerUserDailyMax > MaxAmount {
		return 0, fieldErr("per_user_daily_max", "must be 1..%d, got %d", MaxAmount, p.PerUserDailyMax)
	}
	d, err := time.ParseDuration(p.Lifetime)
	if err != nil || d < time.Second || d > MaxLifetime {
		return 0, fieldErr("lifetime", "must be a duration from 1s to %s (\"720h\"), got %q", MaxLifetime, p.Lifetime)
	}
	return d, nil
}

func newKey() (string, [sha256.Size]byte, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", [sha256.Size]byte{}, fmt.Errorf("task key: %w", err)
	}
	key := TaskKeyPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	return key, sha256.Sum256([]byte(key)), nil
}

// PutTask registers or changes a task; a new task (or rotate_key) gets a fresh key.
func (s *Service) PutTask(ctx context.Context, id string, in *TaskPut) (*TaskPutResult, error) {
	life, err := in.validate(id)
	if err != nil {
		return nil, err
	}
	tx, err := s.pg.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("put task %s: %w", id, err)
	}
	defer tx.Rollback(ctx)
	res := &TaskPutResult{}
	var one int
	err = tx.QueryRow(ctx, `SELECT 1 FROM points_tasks WHERE id = $1 FOR UPDATE`, id).Scan(&one)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res.Created = true
	case err != nil:
		return nil, fmt.Errorf("put task %s: %w", id, err)
	}
	var digest [sha256.Size]byte
	if res.Created || in.RotateKey {
		if res.Key, digest, err = newKey(); err != nil {
			return nil, err
		}
	}
	secs := int64(life / time.Second)
	switch {
	case res.Created:
		_, err = tx.Exec(ctx, `INSERT INTO points_tasks (id, name, per_grant_max, per_user_daily_max, lifetime_seconds, key_sha256)
			VALUES ($1, $2, $3, $4, $5, $6)`, id, in.Name, in.PerGrantMax, in.PerUserDailyMax, secs, digest[:])
	case in.RotateKey:
		_, err = tx.Exec(ctx, `UPDATE points_tasks SET name = $2, per_grant_max = $3, per_user_daily_max = $4,
			lifetime_seconds = $5, key_sha256 = $6, key_rotated_at = now(), updated_at = now() WHERE id = $1`,
			id, in.Name, in.PerGrantMax, in.PerUserDailyMax, secs, digest[:])
	default:
		_, err = tx.Exec(ctx, `UPDATE points_tasks SET name = $2, per_grant_max = $3, per_user_daily_max = $4,
			lifetime_seconds = $5, updated_at = now() WHERE id = $1`, id, in.Name, in.PerGrantMax, in.PerUserDailyMax, secs)
	}
	if err != nil {
		return nil, fmt.Errorf("put task %s: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("put task %s: %w", id, err)
	}
	t, err := s.GetTask(ctx, id)
	if err != nil {
		return nil, err
	}
	res.Task = *t
	return res, nil
}

const taskCols = `id, name, per_grant_max, per_user_daily_max, lifetime_seconds, key_rotated_at`

func scanTask(row pgx.Row) (*Task, error) {
	var t Task
	var secs int64
	if err := row.Scan(&t.ID, &t.Name, &t.PerGrantMax, &t.PerUserDailyMax, &secs, &t.KeyRotatedAt); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	t.lifetime = time.Duration(secs) * time.Second
	t.Lifetime = t.lifetime.String()
	return &t, nil
}

// GetTask reads one task.
func (s *Service) GetTask(ctx context.Context, id string) (*Task, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	return scanTask(s.pg.QueryRow(ctx, `SELECT `+taskCols+` FROM points_tasks WHERE id = $1`, id))
}

// TaskAudit is the audited state of a task (no key digest), {} when it does not exist.
const TaskAudit = `SELECT to_jsonb(t) - 'key_sha256' - 'created_at' - 'updated_at' FROM points_tasks t WHERE id = $1`
