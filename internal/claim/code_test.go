package claim

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestCodesMatchClaimLua reads claim.lua's `local X, Y = n, m` result-code constants and
// checks that the table has exactly those names with those numbers.
func TestCodesMatchClaimLua(t *testing.T) {
	src, err := os.ReadFile("../../scripts/claim.lua")
	if err != nil {
		t.Fatal(err)
	}
	// The constants come first in the script, before the risk flags (F_*).
	head, _, ok := strings.Cut(string(src), "-- Risk flags")
	if !ok {
		t.Fatal("claim.lua: no '-- Risk flags' section after the result codes")
	}
	lua := map[string]int{}
	re := regexp.MustCompile(`(?m)^local ([A-Z_, ]+) = ([0-9, ]+)$`)
	for _, m := range re.FindAllStringSubmatch(head, -1) {
		names := strings.Split(m[1], ",")
		nums := strings.Split(m[2], ",")
		if len(names) != len(nums) {
			t.Fatalf("claim.lua: %q: %d names, %d numbers", m[0], len(names), len(nums))
		}
		for i, n := range names {
			v, err := strconv.Atoi(strings.TrimSpace(nums[i]))
			if err != nil {
				t.Fatal(err)
			}
			lua[strings.TrimSpace(n)] = v
		}
	}
	if len(lua) < 10 {
		t.Fatalf("parsed only %d constants from claim.lua: %v", len(lua), lua)
	}
	for _, r := range Results {
		v, ok := lua[r.Lua]
		switch {
		case !ok:
			t.Errorf("code %d (%s): claim.lua has no constant %s", r.Code, r.Reason, r.Lua)
		case v != r.Code:
			t.Errorf("claim.lua: %s = %d, the table says %d", r.Lua, v, r.Code)
		}
		delete(lua, r.Lua)
	}
	for n, v := range lua {
		t.Errorf("claim.lua: %s = %d is not in the table", n, v)
	}
}

func TestResultTable(t *testing.T) {
	seen := map[string]bool{}
	for i, r := range Results {
		if i > 0 && Results[i-1].Code >= r.Code {
			t.Errorf("Results not in code order at %d", r.Code)
		}
		if seen[r.Reason] {
			t.Errorf("reason %q twice", r.Reason)
		}
		seen[r.Reason] = true
		got, ok := ResultOf(r.Code)
		if !ok || got != r {
			t.Errorf("ResultOf(%d) = %+v, %v", r.Code, got, ok)
		}
		if c, ok := CodeOfReason(r.Reason); !ok || c != r.Code {
			t.Errorf("CodeOfReason(%q) = %d, %v", r.Reason, c, ok)
		}
		if (r.Kind == KindAccepted) == r.NothingTaken {
			t.Errorf("code %d: only an acceptance takes something", r.Code)
		}
		if r.Remembered && r.Kind != KindRejected {
			t.Errorf("code %d: only a rejection is remembered", r.Code)
		}
	}
	for _, c := range []int{0, 3, 63, 64, -1, 1000} {
		if _, ok := ResultOf(c); ok {
			t.Errorf("ResultOf(%d) found a row", c)
		}
	}
	if got := ReasonOf(99); got != "code_99" {
		t.Errorf("ReasonOf(99) = %q", got)
	}
	if !IsRejection(CodeBlocked) || IsRejection(CodeAccepted) || IsRejection(CodeUnknownSKU) || IsRejection(CodeStale) {
		t.Error("IsRejection")
	}
}
