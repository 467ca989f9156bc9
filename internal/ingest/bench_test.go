package ingest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// BenchmarkVerify measures signature verification of a body at the default limit: one HMAC per
// configured secret (the valid one last, the worst case), plus the svix library's pass over the
// signature header, which maxSignatureHeader bounds.
func BenchmarkVerify(b *testing.B) {
	body := padded(b, `{"type":"user.created","data":{"id":"user_1"},"pad":"`, 256<<10)
	junk := func(n int) string { return strings.Repeat("v1,"+strings.Repeat("A", 43)+"= ", n/48) }
	tests := []struct {
		name    string
		secrets []string
		prefix  string
	}{
		{"1 secret", []string{testSecret}, ""},
		{"3 secrets", []string{unknownSecret, rotatedSecret, testSecret}, ""},
		{"3 secrets, 8 KiB signature header", []string{unknownSecret, rotatedSecret, testSecret}, junk(maxSignatureHeader - 100)},
		{"3 secrets, 64 KiB signature header (refused)", []string{unknownSecret, rotatedSecret, testSecret}, junk(64 << 10)},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			v, err := newVerifier(tt.secrets)
			if err != nil {
				b.Fatal(err)
			}
			const id = "msg_bench"
			h := http.Header{}
			h.Set("Svix-Id", id)
			h.Set("Svix-Timestamp", strconv.FormatInt(testNow.Unix(), 10))
			h.Set("Svix-Signature", tt.prefix+signature(b, testSecret, id, testNow, body))
			sh, err := readSignedHeaders(h)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = v.verify(sh, body, testNow)
			}
		})
	}
}

// BenchmarkWebhook measures one webhook through the whole handler, from request to PubAck, on an
// embedded NATS server that fsyncs every message (sync_interval: always).
func BenchmarkWebhook(b *testing.B) {
	f := setup(b)
	body := readFile(b, "user.created.json")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		id := newID()
		req := httptest.NewRequest(http.MethodPost, routeWebhooks, bytes.NewReader(body))
		req.Header.Set("Svix-Id", id)
		req.Header.Set("Svix-Timestamp", strconv.FormatInt(testNow.Unix(), 10))
		req.Header.Set("Svix-Signature", signature(b, testSecret, id, testNow, body))
		rec := httptest.NewRecorder()
		f.handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
