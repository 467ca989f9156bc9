package ingest

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestWebhookLogLines: each stored webhook is one line at debug, none at info; at info a summary
// line says every interval how many were stored and how many were duplicates; refusals stay at
// info.
func TestWebhookLogLines(t *testing.T) {
	t.Parallel()
	f := setup(t)
	body := readFile(t, "user.created.json")
	id := newID()
	for range 2 { // the second is a duplicate
		if a := send(t, f.signedRequest(t, routeWebhooks, testSecret, id, f.opts.now, body)); a.status != 200 {
			t.Fatalf("status %d", a.status)
		}
	}
	if a := send(t, f.request(t, routeWebhooks, []byte("not json"))); a.status != 400 {
		t.Fatalf("a malformed webhook: status %d", a.status)
	}
	out := f.logs.String()
	if n := strings.Count(out, `level=DEBUG msg="webhook stored"`); n != 2 {
		t.Errorf("%d webhook lines at debug, want 2:\n%s", n, out)
	}
	if strings.Contains(out, `level=INFO msg="webhook stored"`) {
		t.Errorf("a webhook was logged at info:\n%s", out)
	}
	if !strings.Contains(out, `level=INFO msg="request refused"`) {
		t.Errorf("the refusal is not logged at info:\n%s", out)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.wh.summarize(ctx, 10*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.logs.String(), `msg="webhooks stored" stored=1 duplicates=1`) {
		if time.Now().After(deadline) {
			t.Fatalf("no summary line:\n%s", f.logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // several more intervals with nothing stored: no more lines
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(f.logs.String(), `msg="webhooks stored"`); n != 1 {
		t.Errorf("%d summary lines, want 1 (quiet intervals log nothing)", n)
	}
}
