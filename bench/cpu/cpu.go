// Package cpu measures where a load run's CPU goes: the CPU time each named process
// (with its children) and bench itself used during the run, and how busy the whole
// machine was, so a run can say how many microseconds of CPU each answered request and
// each accepted claim cost in every part of the system.
//
// It reads Linux's /proc: per process utime+stime+cutime+cstime from /proc/PID/stat,
// summed over the process and every live descendant (a child that exits during the run
// is counted through its parent's cutime/cstime once reaped), and the machine's busy and
// idle time from /proc/stat. bench's own CPU comes from getrusage.
package cpu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc's CPU times. It is 100 on every Linux
// architecture Go supports (the kernel exports it as a constant to user space).
const clockTicks = 100

// Proc is one process to watch: a name for the report and its pid.
type Proc struct {
	Name string
	PID  int
}

// ParseSpec parses --cpu's value: name=PID pairs, comma-separated, like
// "gateway=4121,redis=3990,postgres=3811". Each pid must be a running process.
func ParseSpec(spec string) ([]Proc, error) {
	if runtime.GOOS != "linux" {
		return nil, fmt.Errorf("--cpu reads /proc, which only Linux has (this is %s)", runtime.GOOS)
	}
	var out []Proc
	seen := map[string]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, pidStr, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("--cpu %q: want name=PID, like gateway=4121", part)
		}
		if name == "bench" || name == "machine" {
			return nil, fmt.Errorf("--cpu %q: %q is reported anyway; pick another name", part, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("--cpu %q: name %q given twice", part, name)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(pidStr))
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("--cpu %q: PID %q is not a positive integer", part, pidStr)
		}
		if _, err := readStat(pid); err != nil {
			return nil, fmt.Errorf("--cpu %q: no such process (%v)", part, err)
		}
		seen[name] = true
		out = append(out, Proc{Name: name, PID: pid})
	}
	if len(out) == 0 {
		return nil, errors.New("--cpu: no name=PID pair given")
	}
	return out, nil
}

// stat is what /proc/PID/stat says of CPU time and parentage.
type stat struct {
	ppid  int
	ticks int64 // utime + stime + cutime + cstime
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

// parseStat parses a /proc/PID/stat line. The command name (field 2) is in
// parentheses and may hold spaces and parentheses itself, so fields are counted from the
// last ')'.
func parseStat(b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field N is f[N-3].
	if len(f) < 15 {
		return stat{}, errors.New("short /proc stat line")
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return stat{}, fmt.Errorf("ppid: %w", err)
	}
	var ticks int64
	for _, n := range []int{14, 15, 16, 17} { // utime stime cutime cstime
		v, err := strconv.ParseInt(f[n-3], 10, 64)
		if err != nil {
			return stat{}, fmt.Errorf("field %d: %w", n, err)
		}
		ticks += v
	}
	return stat{ppid: ppid, ticks: ticks}, nil
}

// Snapshot is the CPU counters at one moment.
type Snapshot struct {
	at      time.Time
	procs   map[string]int64 // ticks per watched name
	gone    map[string]bool  // names whose root process had exited
	self    time.Duration    // bench's own user+system time
	busy    int64            // machine ticks not idle or iowait
	idle    int64            // machine idle + iowait ticks
	ncpu    int
	watched []Proc
}

// Take reads the counters of procs, bench's own and the machine's.
func Take(procs []Proc) (*Snapshot, error) {
	s := &Snapshot{at: time.Now(), procs: map[string]int64{}, gone: map[string]bool{}, watched: procs}
	tree, err := allStats()
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for pid, st := range tree {
		children[st.ppid] = append(children[st.ppid], pid)
	}
	for _, p := range procs {
		if _, ok := tree[p.PID]; !ok {
			s.gone[p.Name] = true
			continue
		}
		var sum int64
		stack := []int{p.PID}
		for len(stack) > 0 {
			pid := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			sum += tree[pid].ticks
			stack = append(stack, children[pid]...)
		}
		s.procs[p.Name] = sum
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return nil, fmt.Errorf("getrusage: %w", err)
	}
	s.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if s.busy, s.idle, s.ncpu, err = machine(); err != nil {
		return nil, err
	}
	return s, nil
}

// allStats reads /proc/PID/stat of every process (processes that exit meanwhile are
// skipped).
func allStats() (map[int]stat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	out := make(map[int]stat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out[pid] = st
		}
	}
	return out, nil
}

// machine reads /proc/stat's first line: busy ticks (everything but idle and iowait),
// idle ticks, and the number of cpuN lines.
func machine() (busy, idle int64, ncpu int, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "cpu" {
			// user nice system idle iowait irq softirq steal (guest time is in user).
			for i := 1; i < len(f) && i <= 8; i++ {
				v, perr := strconv.ParseInt(f[i], 10, 64)
				if perr != nil {
					return 0, 0, 0, fmt.Errorf("/proc/stat cpu field %d: %w", i, perr)
				}
				if i == 4 || i == 5 {
					idle += v
				} else {
					busy += v
				}
			}
		} else if strings.HasPrefix(f[0], "cpu") {
			ncpu++
		}
	}
	return busy, idle, ncpu, nil
}

// Part is one process's share of a run's CPU.
type Part struct {
	Name string `json:"name"`
	PID  int    `json:"pid,omitempty"`
	// Seconds of CPU (user + system, children included) during the window.
	Seconds float64 `json:"cpu_seconds"`
	// Cores is Seconds over the window: 1.0 is one core kept busy throughout.
	Cores float64 `json:"cores"`
	// PerAnswerUs and PerAcceptedUs divide the CPU by the requests answered and the
	// claims accepted in the window (0 when there were none).
	PerAnswerUs   float64 `json:"us_per_answer"`
	PerAcceptedUs float64 `json:"us_per_accepted"`
	// Note says why a figure is missing or partial (the process exited).
	Note string `json:"note,omitempty"`
}

// Report is the CPU budget of one run.
type Report struct {
	WindowSeconds float64 `json:"window_seconds"`
	Answered      int64   `json:"answered"`
	Accepted      int64   `json:"accepted"`
	CPUs          int     `json:"cpus"`
	// Parts are the watched processes, then bench itself.
	Parts []Part `json:"parts"`
	// Sum is the parts together: the robust total.
	Sum Part `json:"sum_of_parts"`
	// Machine is the whole machine's busy time (every process, the kernel's interrupt
	// handling included); Unaccounted is what the machine used beyond the parts.
	// /proc/stat samples it at the timer tick, per-process times are exact, so on a
	// lightly loaded VM Machine can read below Sum (seen here: 1,072 against 2,259 µs a
	// claim at a quarter of the machine); read Machine only when the machine is busy.
	Machine     Part    `json:"machine"`
	Unaccounted Part    `json:"unaccounted"`
	IdleCores   float64 `json:"idle_cores"`
}

// Between reports the CPU used from a to b, divided over answered requests and
// accepted claims.
func Between(a, b *Snapshot, answered, accepted int64) *Report {
	win := b.at.Sub(a.at).Seconds()
	r := &Report{WindowSeconds: win, Answered: answered, Accepted: accepted, CPUs: b.ncpu}
	part := func(name string, pid int, sec float64) Part {
		p := Part{Name: name, PID: pid, Seconds: sec}
		if win > 0 {
			p.Cores = sec / win
		}
		if answered > 0 {
			p.PerAnswerUs = sec * 1e6 / float64(answered)
		}
		if accepted > 0 {
			p.PerAcceptedUs = sec * 1e6 / float64(accepted)
		}
		return p
	}
	var sum float64
	for _, pr := range a.watched {
		var p Part
		switch {
		case a.gone[pr.Name], b.gone[pr.Name]:
			p = part(pr.Name, pr.PID, 0)
			p.Note = "process exited during the run: not measured"
		default:
			p = part(pr.Name, pr.PID, float64(b.procs[pr.Name]-a.procs[pr.Name])/clockTicks)
		}
		sum += p.Seconds
		r.Parts = append(r.Parts, p)
	}
	self := (b.self - a.self).Seconds()
	sum += self
	r.Parts = append(r.Parts, part("bench", os.Getpid(), self))
	r.Sum = part("sum", 0, sum)
	busy := float64(b.busy-a.busy) / clockTicks
	r.Machine = part("machine", 0, busy)
	un := busy - sum
	if un < 0 {
		un = 0 // tick rounding: per-process and machine counters are sampled apart
	}
	r.Unaccounted = part("other", 0, un)
	if win > 0 {
		r.IdleCores = float64(b.idle-a.idle) / clockTicks / win
	}
	return r
}
