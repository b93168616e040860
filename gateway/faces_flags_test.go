package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

// -cors-origins takes exact origins and refuses anything else naming the flag; the
// test-only FLASH_FAULT_CLAIM_503 is read from the environment and is not in -help.
func TestFacesFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-cors-origins", "https://app.example.com, http://127.0.0.1:3000"}, io.Discard)
	if err != nil || len(cfg.origins) != 2 || cfg.origins[0] != "https://app.example.com" {
		t.Fatalf("origins: %v %v", cfg, err)
	}
	if cfg, err := parseFlags(nil, io.Discard); err != nil || len(cfg.origins) != 0 || cfg.faultClaim503 != 0 {
		t.Fatalf("defaults: %+v %v (want no origins, no fault)", cfg, err)
	}
	for _, bad := range []string{"*", "https://app.example.com/", "app.example.com"} {
		_, err := parseFlags([]string{"-cors-origins", bad}, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "FLASH_CORS_ORIGINS") {
			t.Errorf("-cors-origins %q: %v; want a usage error naming FLASH_CORS_ORIGINS", bad, err)
		}
	}
	t.Setenv("FLASH_FAULT_CLAIM_503", "2")
	if cfg, err := parseFlags(nil, io.Discard); err != nil || cfg.faultClaim503 != 2 {
		t.Errorf("FLASH_FAULT_CLAIM_503=2: %v %v", cfg, err)
	}
	t.Setenv("FLASH_FAULT_CLAIM_503", "lots")
	if _, err := parseFlags(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "FLASH_FAULT_CLAIM_503") {
		t.Errorf("FLASH_FAULT_CLAIM_503=lots: %v", err)
	}
	var help bytes.Buffer
	if _, err := parseFlags([]string{"-help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatal(err)
	}
	if strings.Contains(help.String(), "FAULT_CLAIM_503") || !strings.Contains(help.String(), "FLASH_CORS_ORIGINS") {
		t.Errorf("-help should list FLASH_CORS_ORIGINS and not the test-only fault:\n%s", help.String())
	}
}
