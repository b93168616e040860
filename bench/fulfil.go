package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// cmdFulfil is `bench fulfil --addr HOST:PORT`: a fulfilment server for a lottery's
// delivered prizes (DESIGN.md "Prize delivery"), the third party a demo or a test
// delivers to. Every POST with an Idempotency-Key is answered 200 and counted by key
// (a second call with a key it has seen is a repeat, still 200: that is how a real
// fulfilment server makes deliveries exactly once in effect); one without a key is 400.
// GET /stats answers {"calls","keys","repeats"}. It runs until interrupted (SIGINT or
// SIGTERM) and then prints the same figures.
func cmdFulfil(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("fulfil", "fulfil [--addr 127.0.0.1:9099]", stdout, stderr)
	var addr string
	fs.StringVar(&addr, "addr", "127.0.0.1:9099", "where to listen (POST any path: a delivery; GET /stats: the figures)")
	if code, stop := parse(fs, fs.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, "fulfil", errUnexpectedArgs(fs.Args()))
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usageErr(stderr, "fulfil", fmt.Errorf("--addr %q: want host:port, like 127.0.0.1:9099", addr))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return failed(stderr, "fulfil", err)
	}
	f := &fulfiller{keys: map[string]int{}}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	fmt.Fprintf(stdout, "fulfil: listening on http://%s (POST: a delivery, GET /stats)\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return failed(stderr, "fulfil", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	s := f.stats()
	fmt.Fprintf(stdout, "fulfil: %d calls, %d prizes (Idempotency-Keys), %d repeats\n", s.Calls, s.Keys, s.Repeats)
	return exitHeld
}

type fulfiller struct {
	mu    sync.Mutex
	calls int64
	keys  map[string]int
}

type fulfilStats struct {
	Calls   int64 `json:"calls"`
	Keys    int   `json:"keys"`
	Repeats int64 `json:"repeats"`
	// Repeated lists up to 20 keys called more than once.
	Repeated []string `json:"repeated,omitempty"`
}

func (f *fulfiller) stats() fulfilStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fulfilStats{Calls: f.calls, Keys: len(f.keys)}
	for k, n := range f.keys {
		if n > 1 {
			s.Repeats += int64(n - 1)
			s.Repeated = append(s.Repeated, k)
		}
	}
	sort.Strings(s.Repeated)
	if len(s.Repeated) > 20 {
		s.Repeated = s.Repeated[:20]
	}
	return s
}

func (f *fulfiller) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/stats":
		_ = json.NewEncoder(w).Encode(f.stats())
	case r.Method != http.MethodPost:
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, `{"error":"method_not_allowed"}`)
	case r.Header.Get("Idempotency-Key") == "":
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"no Idempotency-Key"}`)
	default:
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		key := r.Header.Get("Idempotency-Key")
		f.mu.Lock()
		f.calls++
		f.keys[key]++
		repeat := f.keys[key] > 1
		f.mu.Unlock()
		if repeat {
			_, _ = io.WriteString(w, `{"status":"already_delivered"}`)
			return
		}
		_, _ = io.WriteString(w, `{"status":"delivered"}`)
	}
}
