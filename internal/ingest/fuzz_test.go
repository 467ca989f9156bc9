package ingest

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerksync/clerksync/internal/event"
)

// FuzzWebhook throws arbitrary signature headers and bodies at the handler, signed with the
// test's secret or not. The handler must never panic, must answer in the contract's shape with a
// code of the status table, must accept only what carries the secret's signature over exactly
// that id, timestamp and body, and must store an accepted body byte for byte. Seeded with the
// Clerk payloads in testdata/.
func FuzzWebhook(f *testing.F) {
	paths, err := filepath.Glob("testdata/*.json")
	if err != nil || len(paths) == 0 {
		f.Fatalf("seeds: %v", err)
	}
	now := strconv.FormatInt(testNow.Unix(), 10)
	for _, p := range paths {
		body, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("msg_"+filepath.Base(p), now, "", true, body)
		f.Add("msg_"+filepath.Base(p), now, "v1,AAAA", false, body)
		f.Add("msg_seed", "+0"+now, "v1,x v2,y", true, body)
		f.Add("msg seed", strconv.FormatInt(testNow.Unix()-301, 10), "", true, body)
		f.Add("msg_seed", now, "", true, bytes.Replace(body, []byte(`"user.`), []byte(`"user.>.`), 1))
		f.Add("msg_seed", now, "", true, body[:len(body)/2])
	}
	f.Add("msg_1", now, "", true, []byte(`{"type":"a.b","data":{}}`))
	f.Add("msg_2", now, "", true, []byte(`{"type":"a.b","data":{"id":1},"type":"user.created"}`))
	f.Add("msg_3", now, "", true, []byte(`{"type":"user.created","data":{"id":"u"}`))
	f.Add("", "", "", false, []byte(nil))

	fx := setup(f, withMaxBody(64<<10))
	codes := map[int][]string{
		http.StatusOK:                    {""},
		http.StatusBadRequest:            {"missing_headers", "invalid_headers", "malformed_payload", "invalid_event_type"},
		http.StatusUnauthorized:          {"invalid_signature"},
		http.StatusRequestEntityTooLarge: {"payload_too_large"},
	}

	f.Fuzz(func(t *testing.T, id, timestamp, extraSig string, sign bool, body []byte) {
		// What the test's secret signs for these headers: the svix library signs the parsed
		// timestamp; an unparsable one cannot be signed for.
		sec, tsErr := strconv.ParseInt(timestamp, 10, 64)
		ts := time.Unix(sec, 0)
		valid := signature(t, testSecret, id, ts, body)
		sig := extraSig
		if sign {
			sig = strings.TrimSpace(extraSig + " " + valid)
		}
		req := httptest.NewRequest(http.MethodPost, routeWebhooks, bytes.NewReader(body))
		req.Header.Set("Svix-Id", id)
		req.Header.Set("Svix-Timestamp", timestamp)
		req.Header.Set("Svix-Signature", sig)
		rec := httptest.NewRecorder()

		fx.handler.ServeHTTP(rec, req)

		got := decode(t, rec.Code, rec.Header(), rec.Body.Bytes())
		if wantCodes, ok := codes[got.status]; !ok || !contains(wantCodes, got.code) {
			t.Fatalf("answer %d %q is not a line of the status table", got.status, got.code)
		}
		carriesValid := tsErr == nil && contains(strings.Split(sig, " "), valid)
		if got.status == http.StatusOK && !carriesValid {
			t.Fatalf("accepted a webhook without the secret's signature: id %q ts %q sig %q", id, timestamp, sig)
		}
		inTolerance := tsErr == nil && ts.After(testNow.Add(-tolerance-time.Second)) && ts.Before(testNow.Add(tolerance+time.Second))
		if got.status == http.StatusUnauthorized && sign && extraSig == "" && inTolerance {
			t.Fatalf("refused the secret's own signature in tolerance: id %q ts %q", id, timestamp)
		}
		if got.status != http.StatusOK || got.ack.Duplicate {
			return // a duplicate keeps the first body with that id
		}
		if got.ack.ID != id {
			t.Fatalf("ack for %q, want %q", got.ack.ID, id)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		info, err := fx.stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := fx.stored(t, info.State.LastSeq)
		if m.Header.Get(event.HeaderMsgID) != id || !bytes.Equal(m.Data, body) {
			t.Fatalf("stored %q with id %q, want the request's body with id %q", m.Data, m.Header.Get(event.HeaderMsgID), id)
		}
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
