// Package record owns bench's own record of every 200 it received: one JSON line per
// accepted answer (claim_id, request_id, user, SKU, value, whether it was a replay;
// for a lottery's draws "result":"won", or "result":"no_prize" with a draw_id instead
// of a claim_id), and one per 503 (request_id, user, SKU, "status":503, no claim_id).
// bench run writes it; bench verify reads it to prove that every claim_id the gateway
// handed out is a row in Postgres exactly once (and every draw a draws row), and that
// no request_id answered only 503 became one ("nothing was taken"). It is the client's side of the books, kept independently of
// anything the product stores.
package record

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/flashgate/flashgate/internal/claim"
)

// FileName is the record's name inside a run's output folder.
const FileName = "accepted.jsonl"

// Entry is one 200 answer.
type Entry struct {
	ClaimID   string `json:"claim_id"`
	RequestID string `json:"request_id"`
	Campaign  string `json:"campaign_id"`
	User      string `json:"user_id"`
	SKU       string `json:"sku"`
	Value     int64  `json:"value"`
	Replayed  bool   `json:"replayed,omitempty"`
	// Status is the answer: 0 (older records) or 200 for a claim; 503 for an attempt
	// answered 503 ("nothing was taken"), with no claim_id. bench verify checks that a
	// request_id answered only 503 never became a row.
	Status int `json:"status,omitempty"`
	// Result is a lottery draw's answer (CONTRACT.md "Redemption kinds"): ResultWon (a
	// claim: ClaimID is also its draw_id) or ResultNoPrize (no claim: DrawID, no
	// ClaimID, SKU or Value); "" for any other campaign's claim.
	Result string `json:"result,omitempty"`
	DrawID string `json:"draw_id,omitempty"`
}

// The lottery's answers in Entry.Result.
const (
	ResultWon     = "won"
	ResultNoPrize = "no_prize"
)

// IsNoPrize reports an entry recording a lottery draw that won nothing: a draws row
// in Postgres, never a claim.
func (e *Entry) IsNoPrize() bool { return e.Result == ResultNoPrize }

// Draw is the entry's draw_id for a lottery's answer (a won draw's is its claim_id),
// "" otherwise.
func (e *Entry) Draw() string {
	switch e.Result {
	case ResultNoPrize:
		return e.DrawID
	case ResultWon:
		return e.ClaimID
	}
	return ""
}

// Is503 reports an entry recording a 503 answer rather than a claim.
func (e *Entry) Is503() bool { return e.Status == 503 }

// Writer appends entries to a record file. Safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	f   *os.File
	w   *bufio.Writer
	buf []byte
	n   int64
	err error
}

// Create opens dir/accepted.jsonl for appending (creating dir), so the steps of a ramp
// or several runs against one campaign share one record.
func Create(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	return &Writer{f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

// Add appends one entry. The first write error is kept and returned by Close.
func (w *Writer) Add(e *Entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	b := append(w.buf[:0], '{')
	if e.IsNoPrize() {
		b = append(b, `"draw_id":`...)
		b = claim.AppendString(b, e.DrawID)
	} else {
		b = append(b, `"claim_id":`...)
		b = claim.AppendString(b, e.ClaimID)
	}
	b = append(b, `,"request_id":`...)
	b = claim.AppendString(b, e.RequestID)
	b = append(b, `,"campaign_id":`...)
	b = claim.AppendString(b, e.Campaign)
	b = append(b, `,"user_id":`...)
	b = claim.AppendString(b, e.User)
	b = append(b, `,"sku":`...)
	b = claim.AppendString(b, e.SKU)
	b = append(b, `,"value":`...)
	b = strconv.AppendInt(b, e.Value, 10)
	if e.Replayed {
		b = append(b, `,"replayed":true`...)
	}
	if e.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(e.Status), 10)
	}
	if e.Result != "" {
		b = append(b, `,"result":`...)
		b = claim.AppendString(b, e.Result)
	}
	b = append(b, '}', '\n')
	w.buf = b
	if _, err := w.w.Write(b); err != nil {
		w.err = fmt.Errorf("record: %w", err)
	}
	w.n++
}

// Len is the number of entries added through this writer.
func (w *Writer) Len() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Close flushes, syncs and closes the file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return w.err
	}
	if err := w.w.Flush(); err != nil && w.err == nil {
		w.err = fmt.Errorf("record: %w", err)
	}
	if err := w.f.Sync(); err != nil && w.err == nil {
		w.err = fmt.Errorf("record: %w", err)
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("record: %w", err)
	}
	w.f = nil
	return w.err
}

// Read reads a record: path is a run's output folder or the record file itself.
func Read(path string) ([]Entry, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, FileName)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	defer f.Close()
	return Decode(f, path)
}

// Decode reads JSON lines; name is used in errors.
func Decode(r io.Reader, name string) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		var e Entry
		if err := json.Unmarshal(b, &e); err != nil {
			return nil, fmt.Errorf("record %s line %d: %w", name, line, err)
		}
		switch {
		case e.Is503():
			if e.RequestID == "" || e.ClaimID != "" || e.DrawID != "" || e.Result != "" {
				return nil, fmt.Errorf("record %s line %d: a 503 entry needs a request_id and no claim_id, draw_id or result", name, line)
			}
		case e.Status != 0 && e.Status != 200:
			return nil, fmt.Errorf("record %s line %d: status %d, want 200 or 503", name, line, e.Status)
		case e.Result != "" && e.Result != ResultWon && e.Result != ResultNoPrize:
			return nil, fmt.Errorf("record %s line %d: result %q, want won or no_prize", name, line, e.Result)
		case e.IsNoPrize():
			if e.DrawID == "" || e.RequestID == "" || e.ClaimID != "" {
				return nil, fmt.Errorf("record %s line %d: a no_prize entry needs a draw_id and a request_id, and no claim_id", name, line)
			}
		case e.DrawID != "":
			return nil, fmt.Errorf("record %s line %d: draw_id belongs to a no_prize entry only", name, line)
		case e.ClaimID == "" || e.RequestID == "":
			return nil, fmt.Errorf("record %s line %d: claim_id and request_id are required", name, line)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("record %s: %w", name, err)
	}
	return out, nil
}

// ErrEmpty is returned by callers that need at least one entry.
var ErrEmpty = errors.New("record: no accepted claims in the record")
