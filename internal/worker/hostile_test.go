package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hostileBody is a user.updated for clerkID whose field holds raw: the JSON text of a string
// (quotes included), written into the body as is, so it may carry escapes no encoder writes (a
// lone surrogate) and bytes that are not UTF-8. field "metadata" puts it deep in unsafe_metadata.
func hostileBody(clerkID, field, raw string, updatedAt int64) []byte {
	fields := map[string]string{"first_name": `"Ada"`, "last_name": `"Lovelace"`, "username": `"ada"`,
		"image_url": `"https://img.clerk.com/a"`, "email": `"ada@example.com"`, "metadata": `"ok"`}
	fields[field] = raw
	return fmt.Appendf(nil, `{"object":"event","type":"user.updated","timestamp":%d,"data":{`+
		`"id":%q,"object":"user","created_at":1654012591514,"updated_at":%d,`+
		`"first_name":%s,"last_name":%s,"username":%s,"image_url":%s,`+
		`"primary_email_address_id":"idn_1","email_addresses":[{"id":"idn_1","email_address":%s}],`+
		`"unsafe_metadata":{"nested":[{"note":%s}]},"public_metadata":{}}}`,
		updatedAt, clerkID, updatedAt,
		fields["first_name"], fields["last_name"], fields["username"], fields["image_url"], fields["email"], fields["metadata"])
}

// TestNULAndBrokenUnicodeApply: a NUL (\u0000, which a signed-in user can write into
// unsafe_metadata or a name from the browser), an escaped lone surrogate or bytes that are not
// UTF-8, in any field, apply at once: the text columns hold U+FFFD for what Postgres text cannot,
// clerk_data holds \ufffd where jsonb cannot, and nothing is retried or parked.
func TestNULAndBrokenUnicodeApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.consumer(t)
	tests := []struct {
		field, raw, want string
	}{
		{"first_name", `"a\u0000b"`, "a\uFFFDb"},
		{"last_name", `"\u0000"`, "\uFFFD"},
		{"username", `"x\ud800"`, "x\uFFFD"},
		{"image_url", "\"https://img\xff\"", "https://img\uFFFD"},
		{"email", `"\udc00@x"`, "\uFFFD@x"},
		{"metadata", `"\u0000"`, "\uFFFD"},
		{"metadata", `"\ud83d\ude00 and \ud83d"`, "😀 and \uFFFD"},
		{"metadata", "\"\xc3\x28\"", "\uFFFD("},
	}
	seqs := make([]uint64, len(tests))
	for i, tt := range tests {
		seqs[i] = publishRaw(t, b.js, "clerk.user.updated", fmt.Sprintf("msg_%d", i), hostileBody(fmt.Sprintf("user_%d", i), tt.field, tt.raw, 1700000000000), false)
	}
	c.handle(context.Background(), fetch(t, c, len(tests)))
	if info := settled(t, c.cons); info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered, want none", info.NumRedelivered)
	}
	if n := count(t, b.pool, `SELECT count(*) FROM dead_letters`); n != 0 {
		t.Fatalf("%d dead letters, want none", n)
	}
	state := readState(t, b.pool)
	for i, tt := range tests {
		s := state[fmt.Sprintf("user_%d", i)]
		got := map[string]*string{"first_name": s.FirstName, "last_name": s.LastName, "username": s.Username,
			"image_url": s.ImageURL, "email": s.Email}[tt.field]
		if tt.field == "metadata" {
			note := s.ClerkData.(map[string]any)["unsafe_metadata"].(map[string]any)["nested"].([]any)[0].(map[string]any)["note"].(string)
			got = &note
		}
		if got == nil || *got != tt.want {
			t.Errorf("seq %d, %s %s: stored %q, want %q", seqs[i], tt.field, tt.raw, ptrValue(got), tt.want)
		}
	}
	// The stream keeps the message byte for byte.
	stream, err := b.js.Stream(context.Background(), "CLERK")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetMsg(context.Background(), seqs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msg.Data, []byte(`"a\u0000b"`)) {
		t.Errorf("the stream's copy changed: %s", msg.Data)
	}
}

// TestPermanentErrorsParkAtOnce: an event that fails with an error Postgres will give again on
// every try (a constraint violation) is parked on its first delivery, alone, while the rest of its
// batch applies; nothing is NAKed for a retry.
func TestPermanentErrorsParkAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.pool.Exec(context.Background(), `ALTER TABLE users ADD CONSTRAINT no_mallory CHECK (username IS DISTINCT FROM 'mallory')`); err != nil {
		t.Fatal(err)
	}
	c := b.consumer(t)
	var sent []histEvent
	for i := range 40 {
		e := created(fmt.Sprintf("msg_%02d", i), fmt.Sprintf("user_%02d", i), 1700000000000)
		if i == 17 {
			e.Username = ptr("mallory")
		}
		publish(t, b.js, e, false)
		sent = append(sent, e)
	}
	c.handle(context.Background(), fetch(t, c, len(sent)))
	if info := settled(t, c.cons); info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered, want none: the violation is parked at once", info.NumRedelivered)
	}
	var reason string
	if err := b.pool.QueryRow(context.Background(), `SELECT error FROM dead_letters WHERE event_id = 'msg_17'`).Scan(&reason); err != nil {
		t.Fatalf("the violating event is not parked: %v", err)
	}
	if !strings.Contains(reason, "no_mallory") {
		t.Errorf("dead letter error %q does not name the constraint", reason)
	}
	want := map[string]userState{}
	for i, e := range sent {
		if i != 17 {
			want[e.ClerkID] = live(t, e)
		}
	}
	if diff := cmp.Diff(want, readState(t, b.pool)); diff != "" {
		t.Errorf("projection (-want +got):\n%s", diff)
	}
	if got := counted(c, outcomeRetried); got != 0 {
		t.Errorf("%v events retried, want 0", got)
	}
}

// TestRandomHostileStrings is the property: whatever strings a user puts in any field (control
// characters, escaped lone surrogates, bytes that are not UTF-8, very long values), each event
// applies or is parked on its first delivery; none is retried for a data error.
func TestRandomHostileStrings(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	b := setup(t)
	c := b.consumer(t)
	fields := []string{"first_name", "last_name", "username", "image_url", "email", "metadata"}
	const n = 120
	for i := range n {
		field := fields[r.IntN(len(fields))]
		publishRaw(t, b.js, "clerk.user.updated", fmt.Sprintf("msg_%03d", i),
			hostileBody(fmt.Sprintf("user_%03d", i), field, hostileString(r), 1700000000000+int64(i)), false)
	}
	// A user id too long for the users index cannot apply: it is parked at once (a program limit).
	// (Random letters: a repeated one compresses into the index.)
	var id strings.Builder
	for range 5000 {
		id.WriteByte(byte('a' + r.IntN(26)))
	}
	long := "user_" + id.String()
	publishRaw(t, b.js, "clerk.user.updated", "msg_long", hostileBody(long, "first_name", `"a"`, 1700000000000), false)

	c.handle(context.Background(), fetch(t, c, n+1))
	info := settled(t, c.cons)
	if info.NumRedelivered != 0 {
		t.Errorf("seed %d: %d messages redelivered, want none", seed, info.NumRedelivered)
	}
	applied := count(t, b.pool, `SELECT count(*) FROM users`)
	parked := count(t, b.pool, `SELECT count(*) FROM dead_letters`)
	if applied+parked != n+1 {
		t.Errorf("seed %d: %d applied + %d parked, want %d in all", seed, applied, parked, n+1)
	}
	if got := count(t, b.pool, `SELECT count(*) FROM dead_letters WHERE event_id = 'msg_long'`); got != 1 {
		t.Errorf("the over-long user id was not parked")
	}
	if parked != 1 {
		t.Errorf("seed %d: %d parked, want only the over-long id: every string can be stored", seed, parked)
	}
	if got := counted(c, outcomeRetried); got != 0 {
		t.Errorf("seed %d: %v events retried, want 0", seed, got)
	}
}

// hostileString draws the JSON text of a string (quotes included).
func hostileString(r *rand.Rand) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for range r.IntN(12) {
		switch r.IntN(9) {
		case 0:
			fmt.Fprintf(&sb, `\u%04x`, r.IntN(0x20)) // a control character, NUL included
		case 1:
			fmt.Fprintf(&sb, `\u%04x`, 0xD800+r.IntN(0x800)) // a surrogate, most often alone
		case 2:
			sb.WriteString(`\ud83d\ude00`)
		case 3:
			sb.WriteByte(byte(0x80 + r.IntN(0x80))) // a byte that is not UTF-8 on its own
		case 4:
			sb.WriteString(strings.Repeat("é", 1000+r.IntN(4000)))
		case 5:
			sb.WriteString(`\\u0000`) // an escaped backslash: the text \u0000, not a NUL
		case 6:
			sb.WriteString(`\"\n\t\/`)
		case 7:
			sb.WriteString("日本語")
		default:
			sb.WriteString("plain")
		}
	}
	sb.WriteByte('"')
	if !json.Valid([]byte(`{"a":` + sb.String() + `}`)) {
		panic("hostileString drew invalid JSON: " + sb.String())
	}
	return sb.String()
}

// counted is how many events the consumer counted with outcome o, all types together.
func counted(c *consumer, o outcome) float64 {
	var n float64
	for _, typ := range []string{"user.created", "user.updated", "user.deleted", "other"} {
		n += testutil.ToFloat64(c.metrics.events.WithLabelValues(typ, string(o)))
	}
	return n
}
