// Package risk owns flashgate's risk rules as data: the rule keys the risk team sets
// (per campaign, with a global default), their parsing and validation with errors that
// name the key, how the two levels merge, how rules, blocks and freezes are stored in
// Redis (the claim script reads the same fields, see docs/RISK.md), and the decision
// record the gateway writes to flash.decisions for riskctl to read. It imports no
// database driver: the claim path uses it.
package risk

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Rule keys, as the risk team writes them (`riskctl rules set device.max=3`).
const (
	DeviceMax    = "device.max"
	DeviceWindow = "device.window"
	IPMax        = "ip.max"
	IPWindow     = "ip.window"
	UserMax      = "user.max"
	UserWindow   = "user.window"
	FreezeMax    = "freeze.max"
	FreezeWindow = "freeze.window"
	FreezeFor    = "freeze.for"
	Shadow       = "shadow"
	// The points accounts' auto-freeze (issue 16; DESIGN.md "Points"): an account that
	// gains more than points.max points in points.window is frozen; with points.shadow
	// on it is only counted and logged. Global only (accounts are not per campaign).
	PointsMax    = "points.max"
	PointsWindow = "points.window"
	PointsShadow = "points.shadow"
)

// Bounds of values. A window longer than a day is almost certainly a typo for a shorter
// one (and would keep a day of claims per device in Redis); the freeze window may span
// a week of campaigns, a freeze lasts at most 30 days.
const (
	MaxCount        = 1_000_000
	MinWindow       = time.Second
	MaxWindow       = 24 * time.Hour
	MaxFreezeWindow = 7 * 24 * time.Hour
	MaxFreezeFor    = 30 * 24 * time.Hour
	// MaxPoints bounds points.max (internal/points' MaxAmount).
	MaxPoints = 1_000_000_000
)

// Unset is the value that removes a key from a level, so the level inherits it (a
// campaign then follows the global default; the global level then has the rule off).
const Unset = "default"

type kind int

const (
	kindCount kind = iota
	kindWindow
	kindBool
)

// Spec describes one rule key.
type Spec struct {
	Key string
	// Field is the key's field in the Redis rules hash (windows are in milliseconds).
	Field string
	kind  kind
	max   time.Duration
	// maxCount bounds a count (MaxCount when 0).
	maxCount int64
	// GlobalOnly: the key is set at the global level only (riskctl refuses --campaign).
	GlobalOnly bool
	Help       string
}

// Specs lists every rule key in display order.
var Specs = []Spec{
	{Key: DeviceMax, Field: "device.max", kind: kindCount, Help: "most accepted claims per device in device.window (0: off)"},
	{Key: DeviceWindow, Field: "device.window_ms", kind: kindWindow, max: MaxWindow, Help: "sliding window of device.max"},
	{Key: IPMax, Field: "ip.max", kind: kindCount, Help: "most accepted claims per client IP in ip.window (0: off)"},
	{Key: IPWindow, Field: "ip.window_ms", kind: kindWindow, max: MaxWindow, Help: "sliding window of ip.max"},
	{Key: UserMax, Field: "user.max", kind: kindCount, Help: "most accepted claims per user in user.window (0: off)"},
	{Key: UserWindow, Field: "user.window_ms", kind: kindWindow, max: MaxWindow, Help: "sliding window of user.max"},
	{Key: FreezeMax, Field: "freeze.max", kind: kindCount, Help: "a device or user with more than this many accepted claims across campaigns in freeze.window is frozen for freeze.for (0: off)"},
	{Key: FreezeWindow, Field: "freeze.window_ms", kind: kindWindow, max: MaxFreezeWindow, Help: "sliding window of freeze.max"},
	{Key: FreezeFor, Field: "freeze.for_ms", kind: kindWindow, max: MaxFreezeFor, Help: "how long a freeze lasts"},
	{Key: Shadow, Field: "shadow", kind: kindBool, Help: "on: evaluate and record every risk rejection but let the claim proceed"},
	{Key: PointsMax, Field: "points.max", kind: kindCount, maxCount: MaxPoints, GlobalOnly: true, Help: "a points account that gains more than this many points in points.window is frozen (0: off)"},
	{Key: PointsWindow, Field: "points.window_ms", kind: kindWindow, max: MaxFreezeWindow, GlobalOnly: true, Help: "sliding window of points.max"},
	{Key: PointsShadow, Field: "points.shadow", kind: kindBool, GlobalOnly: true, Help: "on: an account over points.max is counted and logged, not frozen"},
}

var specByKey = func() map[string]*Spec {
	m := make(map[string]*Spec, len(Specs))
	for i := range Specs {
		m[Specs[i].Key] = &Specs[i]
	}
	return m
}()

var specByField = func() map[string]*Spec {
	m := make(map[string]*Spec, len(Specs))
	for i := range Specs {
		m[Specs[i].Field] = &Specs[i]
	}
	return m
}()

// Lookup returns the spec of a rule key.
func Lookup(key string) (*Spec, bool) { s, ok := specByKey[key]; return s, ok }

// Keys returns every rule key in display order.
func Keys() []string {
	out := make([]string, len(Specs))
	for i, s := range Specs {
		out[i] = s.Key
	}
	return out
}

// FieldError is a bad rule setting; Key names it.
type FieldError struct {
	Key string
	Msg string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

func fieldErr(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// IsFieldError reports whether err is (or wraps) a FieldError.
func IsFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

// Rules is one level of rules (or the merge of two): rule key → value. Counts are
// counts, windows are milliseconds, shadow is 0 or 1. A key that is absent is not set
// at this level.
type Rules map[string]int64

// Assignment is one `key=value` of `riskctl rules set`; Unset removes the key.
type Assignment struct {
	Key   string
	Value int64
	Unset bool
}

// ParseAssignments parses `key=value` arguments. Every value is checked; the first bad
// one is returned as a *FieldError naming its key.
func ParseAssignments(args []string) ([]Assignment, error) {
	if len(args) == 0 {
		return nil, errors.New("no settings given: want key=value ... (keys: " + strings.Join(Keys(), ", ") + ")")
	}
	seen := make(map[string]bool, len(args))
	out := make([]Assignment, 0, len(args))
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		k = strings.TrimSpace(k)
		if !ok {
			return nil, fieldErr(arg, "expected key=value")
		}
		a, err := ParseValue(k, strings.TrimSpace(v))
		if err != nil {
			return nil, err
		}
		if seen[k] {
			return nil, fieldErr(k, "given twice")
		}
		seen[k] = true
		out = append(out, a)
	}
	return out, nil
}

// ParseValue parses one rule value for key.
func ParseValue(key, v string) (Assignment, error) {
	s, ok := specByKey[key]
	if !ok {
		return Assignment{}, fieldErr(key, "unknown rule key (known: %s)", strings.Join(Keys(), ", "))
	}
	if v == "" {
		return Assignment{}, fieldErr(key, "empty value (use %s=%s to remove the setting)", key, Unset)
	}
	if v == Unset {
		return Assignment{Key: key, Unset: true}, nil
	}
	switch s.kind {
	case kindCount:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Assignment{}, fieldErr(key, "%q is not a whole number", v)
		}
		if n < 0 {
			return Assignment{}, fieldErr(key, "negative count %d: want 0 (off) or more", n)
		}
		limit := int64(MaxCount)
		if s.maxCount > 0 {
			limit = s.maxCount
		}
		if n > limit {
			return Assignment{}, fieldErr(key, "%d is beyond the maximum %d", n, limit)
		}
		return Assignment{Key: key, Value: n}, nil
	case kindWindow:
		d, err := ParseDuration(v)
		if err != nil {
			return Assignment{}, fieldErr(key, "%q is not a duration (like 30s, 10m, 2h, 7d)", v)
		}
		switch {
		case d == 0:
			return Assignment{}, fieldErr(key, "zero window: want %s to %s (to turn the rule off set its max to 0)", MinWindow, FormatDuration(s.max))
		case d < 0:
			return Assignment{}, fieldErr(key, "negative duration %s", v)
		case d < MinWindow:
			return Assignment{}, fieldErr(key, "%s is shorter than the minimum %s", v, MinWindow)
		case d > s.max:
			return Assignment{}, fieldErr(key, "%s is beyond the maximum %s", v, FormatDuration(s.max))
		case d%time.Millisecond != 0:
			return Assignment{}, fieldErr(key, "%s is not a whole number of milliseconds", v)
		}
		return Assignment{Key: key, Value: d.Milliseconds()}, nil
	default:
		switch strings.ToLower(v) {
		case "on", "true", "1":
			return Assignment{Key: key, Value: 1}, nil
		case "off", "false", "0":
			return Assignment{Key: key, Value: 0}, nil
		}
		return Assignment{}, fieldErr(key, "%q: want on or off", v)
	}
}

// ParseDuration is time.ParseDuration plus a whole number of days ("7d").
func ParseDuration(v string) (time.Duration, error) {
	if strings.HasSuffix(v, "d") {
		n, err := strconv.ParseInt(strings.TrimSuffix(v, "d"), 10, 32)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// FormatDuration prints a duration the shortest way ParseDuration reads back: 60s,
// 10m, 2h, 7d, 1500ms.
func FormatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	case d%time.Millisecond == 0:
		return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
	}
	return d.String()
}

// Format prints the value of key the way the risk team writes it.
func Format(key string, v int64) string {
	s, ok := specByKey[key]
	if !ok {
		return strconv.FormatInt(v, 10)
	}
	switch s.kind {
	case kindWindow:
		return FormatDuration(time.Duration(v) * time.Millisecond)
	case kindBool:
		if v != 0 {
			return "on"
		}
		return "off"
	}
	return strconv.FormatInt(v, 10)
}

// Apply returns a copy of r with the assignments made.
func (r Rules) Apply(as []Assignment) Rules {
	out := r.Clone()
	for _, a := range as {
		if a.Unset {
			delete(out, a.Key)
		} else {
			out[a.Key] = a.Value
		}
	}
	return out
}

// Clone copies r.
func (r Rules) Clone() Rules {
	out := make(Rules, len(r))
	for k, v := range r {
		out[k] = v
	}
	return out
}

// Equal reports whether r and o set the same keys to the same values.
func (r Rules) Equal(o Rules) bool {
	if len(r) != len(o) {
		return false
	}
	for k, v := range r {
		if w, ok := o[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Strings renders r for people and the audit log: key → value as written.
func (r Rules) Strings() map[string]string {
	out := make(map[string]string, len(r))
	for k, v := range r {
		out[k] = Format(k, v)
	}
	return out
}

// Merge returns the rules in force for a campaign: each key from the campaign level when
// set there, else from the global level, exactly as claim.lua merges them.
func Merge(global, campaign Rules) Rules {
	out := make(Rules, len(Specs))
	for _, s := range Specs {
		if v, ok := campaign[s.Key]; ok {
			out[s.Key] = v
		} else if v, ok := global[s.Key]; ok {
			out[s.Key] = v
		}
	}
	return out
}

// Check reports the first rule in effective rules that is on but incomplete: a max
// without its window, a freeze without its window or duration. claim.lua treats such a
// rule as off, so accepting it would silently not enforce what was asked.
func Check(eff Rules) error {
	pairs := [][2]string{{DeviceMax, DeviceWindow}, {IPMax, IPWindow}, {UserMax, UserWindow}, {FreezeMax, FreezeWindow}, {FreezeMax, FreezeFor},
		{PointsMax, PointsWindow}}
	for _, p := range pairs {
		if eff[p[0]] > 0 && eff[p[1]] <= 0 {
			return fieldErr(p[1], "required when %s is set (at this level or globally)", p[0])
		}
	}
	return nil
}

// Velocity is one sliding-window limit in force.
type Velocity struct {
	Max    int64
	Window time.Duration
}

// On reports whether the limit is enforced (claim.lua: max > 0 and window > 0).
func (v Velocity) On() bool { return v.Max > 0 && v.Window > 0 }

// Effective is merged rules in the shape the claim script uses them.
type Effective struct {
	Device, IP, User Velocity
	Freeze           Velocity
	FreezeFor        time.Duration
	Shadow           bool
}

// Effective converts merged rules.
func (r Rules) Effective() Effective {
	ms := func(k string) time.Duration { return time.Duration(r[k]) * time.Millisecond }
	e := Effective{
		Device:    Velocity{r[DeviceMax], ms(DeviceWindow)},
		IP:        Velocity{r[IPMax], ms(IPWindow)},
		User:      Velocity{r[UserMax], ms(UserWindow)},
		Freeze:    Velocity{r[FreezeMax], ms(FreezeWindow)},
		FreezeFor: ms(FreezeFor),
		Shadow:    r[Shadow] == 1,
	}
	return e
}

// FreezeOn reports whether the freeze rule is enforced.
func (e Effective) FreezeOn() bool { return e.Freeze.On() && e.FreezeFor > 0 }

// Diff lists the keys whose value differs between old and new, in display order, as
// "key: old → new" with "-" for a key not set.
func Diff(old, new Rules) []string {
	var out []string
	for _, s := range Specs {
		ov, oo := old[s.Key]
		nv, no := new[s.Key]
		if oo == no && ov == nv {
			continue
		}
		os, ns := "-", "-"
		if oo {
			os = Format(s.Key, ov)
		}
		if no {
			ns = Format(s.Key, nv)
		}
		out = append(out, s.Key+": "+os+" → "+ns)
	}
	return out
}

// SortedKeys returns r's keys in display order (unknown keys last, sorted).
func (r Rules) SortedKeys() []string {
	var out, extra []string
	for _, s := range Specs {
		if _, ok := r[s.Key]; ok {
			out = append(out, s.Key)
		}
	}
	for k := range r {
		if _, ok := specByKey[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}
