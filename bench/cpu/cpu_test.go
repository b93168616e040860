package cpu

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses: fields count from the last ')'.
	line := "4121 (we (ird) name) S 77 4121 4121 0 -1 4194560 1 0 0 0 250 40 7 3 20 0 9 0 100 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 77 || st.ticks != 250+40+7+3 {
		t.Fatalf("got ppid %d ticks %d, want 77 and 300", st.ppid, st.ticks)
	}
	for _, bad := range []string{"", "12 (x S 1 2", "12 (x) S 1 2 3", "12 (x) S nope 1 1 0 -1 0 0 0 0 0 1 1 1 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestParseSpecErrorsNameTheProblem(t *testing.T) {
	cases := map[string]string{
		"":                      "no name=PID",
		"gateway":               "want name=PID",
		"=12":                   "want name=PID",
		"gateway=abc":           "not a positive integer",
		"gateway=-3":            "not a positive integer",
		"bench=1":               "reported anyway",
		"a=1,a=1":               "given twice",
		"gateway=2147483000":    "no such process",
		"redis=1, gateway=zero": "not a positive integer",
	}
	for spec, want := range cases {
		_, err := ParseSpec(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSpec(%q) = %v, want an error containing %q", spec, err, want)
		}
	}
	procs, err := ParseSpec(" init = 1 , ")
	if err != nil || len(procs) != 1 || procs[0] != (Proc{Name: "init", PID: 1}) {
		t.Fatalf("ParseSpec(init=1) = %v, %v", procs, err)
	}
}

// A process that burns CPU through a child it started is charged for it; one that
// sleeps is charged (almost) nothing; bench's own spinning shows as bench.
func TestBetweenChargesEachTreeItsOwnCPU(t *testing.T) {
	busy := exec.Command("sh", "-c", `sh -c 'end=$(($(date +%s)+30)); while [ $(date +%s) -lt $end ]; do :; done' & wait`)
	idle := exec.Command("sleep", "30")
	for _, c := range []*exec.Cmd{busy, idle} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _, _ = c.Process.Wait() })
	}
	// Kill the busy grandchild too when the test ends.
	t.Cleanup(func() { _ = exec.Command("pkill", "-P", strconv.Itoa(busy.Process.Pid)).Run() })
	procs, err := ParseSpec("busy=" + strconv.Itoa(busy.Process.Pid) + ",idle=" + strconv.Itoa(idle.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Take(procs)
	if err != nil {
		t.Fatal(err)
	}
	// bench's own CPU: spin in this process for a while.
	deadline := time.Now().Add(700 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		n++
	}
	b, err := Take(procs)
	if err != nil {
		t.Fatal(err)
	}
	r := Between(a, b, 1000, 250)
	got := map[string]Part{}
	for _, p := range r.Parts {
		got[p.Name] = p
	}
	if len(r.Parts) != 3 || r.Parts[2].Name != "bench" {
		t.Fatalf("parts %+v: want busy, idle, then bench", r.Parts)
	}
	// The busy tree ran a shell loop in a grandchild: it must have used CPU (at least a
	// tenth of the window, far below what one core gives it even on a loaded machine)
	// and no more than the machine has.
	if s := got["busy"].Seconds; s < 0.05 || s > r.WindowSeconds*float64(r.CPUs)+0.05 {
		t.Errorf("busy tree used %.2fs of CPU in a %.2fs window on %d CPUs", s, r.WindowSeconds, r.CPUs)
	}
	if s := got["idle"].Seconds; s > 0.02 {
		t.Errorf("sleeping process charged %.2fs", s)
	}
	if s := got["bench"].Seconds; s < 0.05 {
		t.Errorf("bench spun for %.2fs of wall time but was charged %.2fs", r.WindowSeconds, s)
	}
	p := got["busy"]
	if want := p.Seconds * 1e6 / 1000; p.PerAnswerUs != want || p.PerAcceptedUs != p.Seconds*1e6/250 {
		t.Errorf("per-answer %.1f us (want %.1f), per-accepted %.1f us", p.PerAnswerUs, want, p.PerAcceptedUs)
	}
	if want := got["busy"].Seconds + got["idle"].Seconds + got["bench"].Seconds; r.Sum.Seconds != want {
		t.Errorf("sum of parts %.3fs, want %.3fs", r.Sum.Seconds, want)
	}
	if r.Machine.Seconds+0.05 < got["busy"].Seconds+got["bench"].Seconds {
		t.Errorf("machine busy %.2fs is less than its parts (%.2fs + %.2fs)", r.Machine.Seconds, got["busy"].Seconds, got["bench"].Seconds)
	}
}

func TestBetweenNotesAProcessThatExited(t *testing.T) {
	c := exec.Command("sleep", "30")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	procs, err := ParseSpec("short=" + strconv.Itoa(c.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Take(procs)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Process.Kill()
	_, _ = c.Process.Wait()
	b, err := Take(procs)
	if err != nil {
		t.Fatal(err)
	}
	r := Between(a, b, 10, 10)
	if r.Parts[0].Note == "" || r.Parts[0].Seconds != 0 {
		t.Fatalf("exited process: %+v, want a note and no figure", r.Parts[0])
	}
}
