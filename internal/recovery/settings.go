package recovery

import (
	"fmt"
	"time"

	"github.com/flashgate/flashgate/internal/flagenv"
)

// Settings are the Redis-loss recovery settings the gateway and the settler both take
// (each runs a recoverer), registered and checked here once so that the two binaries
// cannot drift apart in name, default or bound. An error names the flag and its
// environment twin.
type Settings struct {
	Interval, CatchUpTimeout, AcceptGrace time.Duration
	// BusinessLines is the comma-separated list as given ("" = every business line).
	BusinessLines string
}

// Register adds the recovery flags (with their FLASH_* twins) to f.
func (s *Settings) Register(f *flagenv.Set) {
	f.Duration(&s.AcceptGrace, "accept-grace", "FLASH_ACCEPT_GRACE", 24*time.Hour,
		"how long after a campaign's end its accepted requests' idempotency records live, so late retries get their claim back (gateway and settler must agree); older campaigns without unexpired vouchers are not watched")
	f.Duration(&s.Interval, "recovery-interval", "FLASH_RECOVERY_INTERVAL", 500*time.Millisecond,
		"Redis-loss recovery: detection period (the longest a restarted Redis goes unnoticed)")
	f.Duration(&s.CatchUpTimeout, "recovery-catchup-timeout", "FLASH_RECOVERY_CATCHUP_TIMEOUT", time.Minute,
		"Redis-loss recovery: longest wait for the settler group to settle what is in Kafka before a rebuild (the business line stays fenced and is retried after it)")
	f.String(&s.BusinessLines, "recovery-business-lines", "FLASH_RECOVERY_BUSINESS_LINES", "",
		"Redis-loss recovery: only these business lines (comma-separated); default every business line in Postgres. For a Redis that serves some business lines of a shared database")
}

// Validate reports the first setting out of its bounds.
func (s Settings) Validate() error {
	switch {
	case s.AcceptGrace < 0:
		return fmt.Errorf("-accept-grace (FLASH_ACCEPT_GRACE)=%s, want 0 or more", s.AcceptGrace)
	case s.Interval < 10*time.Millisecond:
		return fmt.Errorf("-recovery-interval (FLASH_RECOVERY_INTERVAL)=%s, want at least 10ms", s.Interval)
	case s.CatchUpTimeout < 100*time.Millisecond:
		return fmt.Errorf("-recovery-catchup-timeout (FLASH_RECOVERY_CATCHUP_TIMEOUT)=%s, want at least 100ms", s.CatchUpTimeout)
	}
	return nil
}

// Config is the recoverer's Config for these settings.
func (s Settings) Config() Config {
	return Config{Interval: s.Interval, CatchUpTimeout: s.CatchUpTimeout, AcceptGrace: s.AcceptGrace,
		BusinessLines: flagenv.List(s.BusinessLines)}
}
