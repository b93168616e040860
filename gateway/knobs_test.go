package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

// The test-only fault knobs stay out of -help (STYLE 17) yet are still read from the
// environment; -help names the one connection flags.
func TestFaultKnobsOutOfHelp(t *testing.T) {
	var help bytes.Buffer
	if _, err := parseFlags([]string{"-help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	if strings.Contains(help.String(), "FLASH_FAULT") {
		t.Errorf("-help shows a test-only fault knob:\n%s", help.String())
	}
	for _, name := range []string{"-redis-addr", "-kafka-brokers", "-pg-url"} {
		if !strings.Contains(help.String(), name) {
			t.Errorf("-help does not show %s:\n%s", name, help.String())
		}
	}
	t.Setenv("FLASH_FAULT_EXIT_AFTER_SCRIPT", "1")
	cfg, err := parseFlags(nil, io.Discard)
	if err != nil || !cfg.faultExitAfterScript {
		t.Fatalf("FLASH_FAULT_EXIT_AFTER_SCRIPT=1: %v, set %v; want it read from the environment", err, cfg != nil && cfg.faultExitAfterScript)
	}
	t.Setenv("FLASH_FAULT_EXIT_AFTER_SCRIPT", "yes")
	if _, err := parseFlags(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "FLASH_FAULT_EXIT_AFTER_SCRIPT") {
		t.Fatalf("FLASH_FAULT_EXIT_AFTER_SCRIPT=yes: %v; want an error naming it", err)
	}
}
