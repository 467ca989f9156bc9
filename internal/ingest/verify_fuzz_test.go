package ingest

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzSignatureHeader drives the signature path alone — readSignedHeaders, then verify against
// two secrets — with arbitrary id, timestamp and signature headers. It must never panic; it must
// accept only a header holding, as one space-separated entry, the exact signature one of the
// secrets makes over that id, timestamp and body (no false accept); and it must accept that
// signature wherever it stands among other entries, when the id and timestamp are valid and in
// tolerance (no false reject).
func FuzzSignatureHeader(f *testing.F) {
	now := strconv.FormatInt(testNow.Unix(), 10)
	f.Add("msg_1", now, "", 0, true)
	f.Add("msg_1", now, "v1,AAAA v1,", 1, true)
	f.Add("msg_1", now, "v1,"+strings.Repeat("A", 44), 0, false)
	f.Add("msg_1", now, "v2,x\u00a0v1,y", 1, true)
	f.Add("msg_1", "0"+now, "v1,", 0, true)
	f.Add("msg 1", now, "", 0, true)
	f.Add("msg_1", strconv.FormatInt(testNow.Unix()-301, 10), "", 0, true)
	f.Add("msg_1", "1e9", "v1", 1, true)
	f.Add("", "", "", 0, false)

	secrets := []string{testSecret, rotatedSecret}
	v, err := newVerifier(secrets)
	if err != nil {
		f.Fatal(err)
	}
	body := []byte(`{"type":"user.created","data":{"id":"user_1"}}`)

	f.Fuzz(func(t *testing.T, id, timestamp, others string, secret int, sign bool) {
		secret = (secret%len(secrets) + len(secrets)) % len(secrets)
		sec, tsErr := strconv.ParseInt(timestamp, 10, 64)
		ts := time.Unix(sec, 0)
		var valid [2]string
		for i, s := range secrets {
			valid[i] = signature(t, s, id, ts, body)
		}
		sig := others
		if sign {
			sig = strings.TrimSpace(others + " " + valid[secret])
		}
		h := http.Header{}
		h.Set("Svix-Id", id)
		h.Set("Svix-Timestamp", timestamp)
		h.Set("Svix-Signature", sig)

		s, err := readSignedHeaders(h)
		if err != nil {
			return // refused before any HMAC: never an accept
		}
		if s.id != id || s.timestamp != timestamp || s.signature != sig {
			t.Fatalf("read %q %q %q, want the headers as sent", s.id, s.timestamp, s.signature)
		}
		matched, err := v.verify(s, body, testNow)
		entries := strings.Split(sig, " ")
		if err == nil {
			if tsErr != nil || matched < 0 || !contains(entries, valid[matched]) {
				t.Fatalf("accepted for secret %d: id %q ts %q sig %q", matched, id, timestamp, sig)
			}
			return
		}
		inTolerance := !ts.Before(testNow.Add(-tolerance)) && !ts.After(testNow.Add(tolerance))
		if sign && tsErr == nil && inTolerance && len(sig) <= maxSignatureHeader && printableASCII(sig) {
			t.Fatalf("refused secret %d's own signature: id %q ts %q sig %q: %v", secret, id, timestamp, sig, err)
		}
	})
}
