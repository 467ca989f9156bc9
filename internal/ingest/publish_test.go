package ingest

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"

	"github.com/clerksync/clerksync/internal/event"
)

// TestStoredMessage: what lands in the stream is the request body byte for byte, on
// clerk.<type>, with the contract's headers; a second delivery of the same svix-id is one message.
func TestStoredMessage(t *testing.T) {
	t.Parallel()
	f := setup(t)
	// Odd but valid JSON: spacing, escapes, key order and a trailing newline must all survive.
	body := []byte("{ \"data\" : {\"id\":\"user_\\u0031\", \"first_name\":\"Zo\u00eb\"},\n\t\"type\":\"user.created\" ,\"object\":\"event\"}\n")
	req := f.request(t, routeWebhooks, body)
	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	req.Header.Set("Traceparent", traceparent)
	id, ts, sig := req.Header.Get("Svix-Id"), req.Header.Get("Svix-Timestamp"), req.Header.Get("Svix-Signature")

	if got := send(t, req); got.status != 200 || got.ack != (ack{ID: id}) {
		t.Fatalf("answer %+v, want 200 {%s false}", got, id)
	}
	m := f.stored(t, 1)
	if m.Subject != "clerk.user.created" {
		t.Errorf("subject %q, want clerk.user.created", m.Subject)
	}
	if !bytes.Equal(m.Data, body) {
		t.Errorf("stored body %q, want the request's %q", m.Data, body)
	}
	want := nats.Header{
		event.HeaderMsgID:         {id},
		event.HeaderSvixID:        {id},
		event.HeaderSvixTimestamp: {ts},
		event.HeaderSvixSignature: {sig},
		event.HeaderEventType:     {"user.created"},
		event.HeaderReceivedAt:    {"2026-01-02T03:04:05Z"},
		event.HeaderTraceparent:   {traceparent},
	}
	if diff := cmp.Diff(want, m.Header); diff != "" {
		t.Errorf("headers (-want +got)\n%s", diff)
	}
	if _, err := time.Parse(time.RFC3339, m.Header.Get(event.HeaderReceivedAt)); err != nil {
		t.Errorf("Received-At: %v", err)
	}

	// Svix retries with the same id, timestamp and signature: one message, "duplicate":true.
	again := f.request(t, routeWebhooks, body)
	again.Header = req.Header.Clone()
	if got := send(t, again); got.status != 200 || got.ack != (ack{ID: id, Duplicate: true}) {
		t.Fatalf("second delivery: answer %+v, want 200 {%s true}", got, id)
	}
	if n := f.msgs(t); n != 1 {
		t.Errorf("stream holds %d messages after a duplicate, want 1", n)
	}
	if got := counter(t, f.reg, "clerksync_ingest_duplicates_total", nil); got != 1 {
		t.Errorf("duplicates metric %v, want 1", got)
	}
	for code, want := range map[string]float64{"stored": 1, "duplicate": 1} {
		if got := counter(t, f.reg, "clerksync_ingest_requests_total", map[string]string{"route": routeWebhooks, "status": "200", "code": code}); got != want {
			t.Errorf("requests{code=%q} = %v, want %v", code, got, want)
		}
	}

	// Without a traceparent, there is no traceparent header; a malformed one is dropped.
	for _, tp := range []string{"", strings.Repeat("0", maxTraceparentLen+1)} {
		r := f.request(t, routeWebhooks, readFile(t, "user.deleted.json"))
		if tp != "" {
			r.Header.Set("Traceparent", tp)
		}
		got := send(t, r)
		if got.status != 200 {
			t.Fatalf("answer %+v", got)
		}
		m := f.stored(t, f.msgs(t))
		if v, ok := m.Header[event.HeaderTraceparent]; ok {
			t.Errorf("traceparent %q stored, want none", v)
		}
		if m.Subject != "clerk.user.deleted" {
			t.Errorf("subject %q, want clerk.user.deleted", m.Subject)
		}
	}
}

// TestContentEncodingNotUndone: ingest verifies and stores the bytes on the wire; it never
// decompresses, whatever Content-Encoding says.
func TestContentEncodingNotUndone(t *testing.T) {
	t.Parallel()
	f := setup(t)
	plain := readFile(t, "user.created.json")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}

	// Compressed bytes, signed as they are: the signature holds, the bytes are not JSON.
	req := f.request(t, routeWebhooks, gz.Bytes())
	req.Header.Set("Content-Encoding", "gzip")
	if got := send(t, req); got.status != 400 || got.code != "malformed_payload" {
		t.Errorf("gzip body: answer %d %q, want 400 malformed_payload", got.status, got.code)
	}
	// Signed over the uncompressed JSON but sent compressed: not what was signed.
	req = f.request(t, routeWebhooks, plain)
	req.Header.Set("Content-Encoding", "gzip")
	req.Body = nopCloser{bytes.NewReader(gz.Bytes())}
	req.ContentLength = int64(gz.Len())
	if got := send(t, req); got.status != 401 {
		t.Errorf("gzip of the signed body: answer %d %q, want 401", got.status, got.code)
	}
	// A Content-Encoding that does not match the bytes changes nothing: stored as sent.
	req = f.request(t, routeWebhooks, plain)
	req.Header.Set("Content-Encoding", "gzip")
	if got := send(t, req); got.status != 200 {
		t.Fatalf("plain body labelled gzip: answer %d %q, want 200", got.status, got.code)
	}
	if m := f.stored(t, 1); !bytes.Equal(m.Data, plain) {
		t.Error("stored body differs from the request's")
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// TestNATSOutage: while NATS is down every webhook gets 503 with Retry-After, never a 2xx; when
// it is back, the same handler and connection accept again, and every acknowledged webhook is in
// the stream.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	const publishTimeout = time.Second
	f := setup(t, withPublishTimeout(publishTimeout))
	client := &http.Client{Timeout: publishTimeout + 5*time.Second}
	body := readFile(t, "user.created.json")
	var acked []string
	post := func() answer {
		t.Helper()
		req := f.request(t, routeWebhooks, body)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("webhook during the outage: %v", err)
		}
		defer func() { _ = resp.Body.Close() }()
		var b bytes.Buffer
		if _, err := b.ReadFrom(resp.Body); err != nil {
			t.Fatal(err)
		}
		a := decode(t, resp.StatusCode, resp.Header, b.Bytes())
		if a.status == 200 {
			acked = append(acked, a.ack.ID)
		}
		return a
	}

	if a := post(); a.status != 200 {
		t.Fatalf("before the outage: %d %s", a.status, a.code)
	}
	f.nats.Shutdown()
	for range 3 {
		a := post()
		if a.status != 503 || a.code != "stream_unavailable" || a.header.Get("Retry-After") == "" {
			t.Fatalf("during the outage: %d %q Retry-After %q, want 503 stream_unavailable with Retry-After",
				a.status, a.code, a.header.Get("Retry-After"))
		}
	}
	f.nats.Start()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		a := post()
		if a.status == 200 {
			break
		}
		if a.status != 503 {
			t.Fatalf("while NATS comes back: %d %s, want 503 or 200", a.status, a.code)
		}
		if time.Now().After(deadline) {
			t.Fatal("ingest does not accept webhooks again after NATS came back")
		}
	}

	// Every acknowledged webhook is stored.
	var stored []string
	for seq := uint64(1); seq <= f.msgs(t); seq++ {
		stored = append(stored, f.stored(t, seq).Header.Get(event.HeaderMsgID))
	}
	for _, id := range acked {
		if !slices.Contains(stored, id) {
			t.Errorf("acknowledged webhook %s is not in the stream", id)
		}
	}
	if got := counter(t, f.reg, "clerksync_ingest_requests_total", map[string]string{"route": routeWebhooks, "status": "503", "code": "stream_unavailable"}); got < 3 {
		t.Errorf("requests{code=stream_unavailable} = %v, want at least 3", got)
	}
}

// TestLargestWebhookFits: the largest webhook ingest accepts (a body of exactly the limit, the
// longest id, type, signature header and traceparent) fits a server whose max_payload is exactly
// the limit plus headerRoom, which is what ingest checks at start.
func TestLargestWebhookFits(t *testing.T) {
	t.Parallel()
	const maxPayload = 1 << 20 // natsembed's
	limit := int64(maxPayload - headerRoom)
	if err := checkRoom(maxPayload, limit); err != nil {
		t.Fatal(err)
	}
	if err := checkRoom(maxPayload, limit+1); err == nil {
		t.Fatal("checkRoom accepts a limit one byte too large")
	}
	f := setup(t, withMaxBody(limit))

	typ := "a." + strings.Repeat("b", maxTypeLen-2)
	body := padded(t, `{"type":"`+typ+`","data":{"id":"x"},"pad":"`, int(limit))
	id := "msg_" + strings.Repeat("z", maxIDLen-4)
	req := f.signedRequest(t, routeWebhooks, testSecret, id, testNow, body)
	valid := req.Header.Get("Svix-Signature")
	filler := strings.Repeat("v1,"+strings.Repeat("A", 43)+"= ", maxSignatureHeader/48-2)
	sig := filler + strings.Repeat("x", maxSignatureHeader-len(filler)-len(valid)-1) + " " + valid
	if len(sig) != maxSignatureHeader {
		t.Fatalf("signature header of %d bytes, want %d", len(sig), maxSignatureHeader)
	}
	req.Header.Set("Svix-Signature", sig)
	// An integer, however many leading zeros it has; the stream holds its canonical form.
	req.Header.Set("Svix-Timestamp", "+"+strings.Repeat("0", 4096)+strconv.FormatInt(testNow.Unix(), 10))
	req.Header.Set("Traceparent", strings.Repeat("t", maxTraceparentLen))
	if got := send(t, req); got.status != 200 {
		t.Fatalf("largest webhook: answer %d %q, want 200", got.status, got.code)
	}
	m := f.stored(t, 1)
	if len(m.Data) != int(limit) || m.Header.Get(event.HeaderSvixSignature) != sig {
		t.Errorf("stored %d bytes, want %d, with the full signature header", len(m.Data), limit)
	}
	if got, want := m.Header.Get(event.HeaderSvixTimestamp), strconv.FormatInt(testNow.Unix(), 10); got != want {
		t.Errorf("stored Svix-Timestamp %q, want %q", got, want)
	}
}
