package scripts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/internal/testenv"
)

// promtool comes with Debian's prometheus package, which scripts/stack.sh installs
// (`make up`, and so `make test`).
func promtool(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found: run `make up` (scripts/stack.sh installs Debian's prometheus package)")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = filepath.Join(testenv.ModuleRoot(t), "scripts", "prometheus")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// The Prometheus config and alerting rules are valid, and every alert fires on the
// series it is for and not on a healthy system (rules_test.yml).
func TestPrometheusRules(t *testing.T) {
	promtool(t, "check", "config", "prometheus.yml")
	promtool(t, "check", "rules", "rules.yml")
	promtool(t, "test", "rules", "rules_test.yml")
}

// pendingMetrics are named by rules before the code that exports them lands.
// None today: the dead-letter rule names the settler's set-aside counter.
var pendingMetrics = map[string]string{}

// Every flashgate metric the rules use is exported by some binary: a renamed metric
// would otherwise leave its alert silently matching nothing.
func TestPrometheusRulesNameRealMetrics(t *testing.T) {
	root := testenv.ModuleRoot(t)
	rules, err := os.ReadFile(filepath.Join(root, "scripts", "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && p != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	code := src.String()
	seen := map[string]bool{}
	for _, name := range regexp.MustCompile(`\bflashgate_[a-z_]+`).FindAllString(string(rules), -1) {
		base := name
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suf)
		}
		if seen[base] {
			continue
		}
		seen[base] = true
		if _, ok := pendingMetrics[base]; ok {
			continue
		}
		if !strings.Contains(code, `"`+base+`"`) {
			t.Errorf("rules.yml uses %s, which no binary exports", name)
		}
	}
	if len(seen) < 8 {
		t.Fatalf("found only %d metric names in rules.yml", len(seen))
	}
}
