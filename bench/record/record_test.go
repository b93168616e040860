package record

import (
	"strings"
	"sync"
	"testing"
)

func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				w.Add(&Entry{ClaimID: "c.x" + string(rune('a'+i)), RequestID: "r", Campaign: "c", User: "u\"q", SKU: "s", Value: int64(j), Replayed: j%2 == 0})
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// A second writer appends: a ramp's steps share one record.
	w, err = Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	w.Add(&Entry{ClaimID: "c.last", RequestID: "r2", Campaign: "c", User: "u", SKU: "s", Value: 7})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 801 || got[800].ClaimID != "c.last" || got[0].User != "u\"q" {
		t.Fatalf("read %d entries, last %+v, first %+v", len(got), got[len(got)-1], got[0])
	}
}

func TestDecodeErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"{\"claim_id\":\"a\",\"request_id\":\"b\"}\nnot json\n", "line 2"},
		{"{\"claim_id\":\"a\"}\n", "line 1: claim_id and request_id are required"},
	} {
		if _, err := Decode(strings.NewReader(tc.in), "x"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("{\"claim_id\":\"a\",\"request_id\":\"b\",\"value\":5}\n\n"))
	f.Add([]byte("{\"claim_id\":\"a\",\"request_id\":\"b\",\"replayed\":true}"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := Decode(strings.NewReader(string(b)), "fuzz")
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.ClaimID == "" || e.RequestID == "" {
				t.Fatalf("decoded an entry without ids: %+v", e)
			}
		}
	})
}
