package recovery

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/internal/flagenv"
)

// The recovery settings both binaries take are registered once, read from the flag or
// its FLASH_* twin, and a value out of bounds is refused naming both.
func TestSettingsRegisterAndValidate(t *testing.T) {
	parse := func(args ...string) Settings {
		t.Helper()
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f := flagenv.New(fs)
		var s Settings
		s.Register(f)
		if err := f.Parse(args); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := parse()
	if s.Interval != 500*time.Millisecond || s.CatchUpTimeout != time.Minute || s.AcceptGrace != 24*time.Hour || s.BusinessLines != "" {
		t.Fatalf("defaults %+v", s)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	t.Setenv("FLASH_RECOVERY_BUSINESS_LINES", " bl-a, ,bl-b ")
	if c := parse().Config(); len(c.BusinessLines) != 2 || c.BusinessLines[0] != "bl-a" || c.BusinessLines[1] != "bl-b" {
		t.Fatalf("business lines from the env twin: %q", c.BusinessLines)
	}
	for _, tc := range []struct{ arg, want string }{
		{"-accept-grace=-1s", "-accept-grace (FLASH_ACCEPT_GRACE)=-1s, want 0 or more"},
		{"-recovery-interval=1ms", "-recovery-interval (FLASH_RECOVERY_INTERVAL)=1ms, want at least 10ms"},
		{"-recovery-catchup-timeout=10ms", "-recovery-catchup-timeout (FLASH_RECOVERY_CATCHUP_TIMEOUT)=10ms, want at least 100ms"},
	} {
		if err := parse(tc.arg).Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.arg, err, tc.want)
		}
	}
}
