package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReplay rebuilds the projection from the stream, repairs it with --reapply, and checks what
// a dry run and the other options do.
func TestReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	seed := uint64(time.Now().UnixNano())
	t.Logf("history seed %d", seed)
	history, sent := publishHistory(t, b, seed, 40)
	publishRaw(t, b.js, "clerk.user.updated", "msg_poison", []byte(`{"type":"user.updated"}`), false)
	edge := created("msg_edge", "user_edge", 1700000000000)
	edge.Type = "user.createdAtEdge"
	publish(t, b.js, edge, false)
	publishRaw(t, b.js, "clerk.session.created", "msg_session", []byte(`{"type":"session.created","data":{"id":"sess_1"}}`), false)
	read := len(sent) + 2 // the session event is outside clerk.user.>

	r := start(t, b.cfg)
	waitFor(t, 30*time.Second, "the worker to apply the stream", func() bool {
		return count(t, b.pool, `SELECT count(*) FROM processed_events`) == distinctIDs(history) &&
			count(t, b.pool, `SELECT count(*) FROM dead_letters`) == 1
	})
	settled(t, durable(t, b))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	built := readState(t, b.pool)
	if diff := cmp.Diff(fold(t, history), built); diff != "" {
		t.Fatalf("projection built by the worker (-want +got):\n%s", diff)
	}
	cfg := b.cfg
	cfg.BatchSize = 16
	logger := testLogger(t)
	replay := func(opts ReplayOptions) Summary {
		t.Helper()
		sum, err := Replay(ctx, cfg, opts, logger)
		if err != nil {
			t.Fatalf("Replay(%+v): %v", opts, err)
		}
		return sum
	}
	duplicates := len(sent) - distinctIDs(history)

	// Over an up-to-date projection every event is a duplicate. (Steps run in order: each builds on the last.)
	{
		got := replay(ReplayOptions{FromSeq: 1})
		want := Summary{Read: read, Duplicates: len(sent), Ignored: 1, DeadLettered: 1, LastSeq: got.LastSeq}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("summary (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(built, readState(t, b.pool)); diff != "" {
			t.Errorf("projection changed (-want +got):\n%s", diff)
		}
		if n := count(t, b.pool, `SELECT count(*) FROM dead_letters`); n != 1 {
			t.Errorf("the poison was parked again: %d dead letters", n)
		}
	}

	truncate := func() {
		t.Helper()
		if _, err := b.pool.Exec(ctx, `TRUNCATE users, subscriptions, usage_metrics, processed_events`); err != nil {
			t.Fatal(err)
		}
	}

	// A dry run writes nothing.
	{
		truncate()
		got := replay(ReplayOptions{FromSeq: 1, DryRun: true})
		if got.Read != read || got.Applied == 0 {
			t.Errorf("dry run summary %+v", got)
		}
		if n := count(t, b.pool, `SELECT count(*) FROM users`) + count(t, b.pool, `SELECT count(*) FROM processed_events`); n != 0 {
			t.Errorf("a dry run wrote %d rows", n)
		}
	}

	// From sequence 1 rebuilds identical rows.
	{
		truncate()
		got := replay(ReplayOptions{FromSeq: 1})
		if got.Applied+got.Stale != distinctIDs(history) || got.Duplicates != duplicates {
			t.Errorf("summary %+v: want %d applied or stale and %d duplicates", got, distinctIDs(history), duplicates)
		}
		if diff := cmp.Diff(built, readState(t, b.pool)); diff != "" {
			t.Errorf("rebuilt projection (-want +got):\n%s", diff)
		}
	}

	// Reapply repairs what a bug wrote.
	{
		if _, err := b.pool.Exec(ctx, `UPDATE users SET email = 'corrupted@example.com', first_name = 'Corrupted' WHERE deleted_at IS NULL`); err != nil {
			t.Fatal(err)
		}
		if _, err := b.pool.Exec(ctx, `UPDATE usage_metrics SET period_start = '2000-01-01'`); err != nil {
			t.Fatal(err)
		}
		corrupted := readState(t, b.pool)
		replay(ReplayOptions{FromSeq: 1})
		if diff := cmp.Diff(corrupted, readState(t, b.pool)); diff != "" {
			t.Errorf("a plain replay changed rows it had applied (-want +got):\n%s", diff)
		}
		// The ledger no longer filters: only a repeat inside one batch is still a duplicate.
		got := replay(ReplayOptions{FromSeq: 1, Reapply: true})
		if got.Applied == 0 || got.Applied+got.Stale+got.Duplicates != len(sent) {
			t.Errorf("reapply summary %+v: want every one of the %d events folded again", got, len(sent))
		}
		if diff := cmp.Diff(built, readState(t, b.pool)); diff != "" {
			t.Errorf("repaired projection (-want +got):\n%s", diff)
		}
	}

	// Since a time.
	{
		got := replay(ReplayOptions{Since: before})
		if got.Read != read || got.Duplicates != len(sent) {
			t.Errorf("summary %+v", got)
		}
		if got := replay(ReplayOptions{Since: time.Now().Add(time.Hour)}); got.Read != 0 {
			t.Errorf("replay from the future read %d", got.Read)
		}
	}

	// Up to a sequence.
	{
		got := replay(ReplayOptions{FromSeq: 3, ToSeq: 10})
		if got.Read != 8 || got.LastSeq != 10 {
			t.Errorf("summary %+v: want sequences 3 to 10", got)
		}
	}

	// Options.
	{
		for _, opts := range []ReplayOptions{{}, {FromSeq: 1, Since: before}, {FromSeq: 5, ToSeq: 4}} {
			if _, err := Replay(ctx, cfg, opts, logger); err == nil {
				t.Errorf("Replay(%+v) succeeded", opts)
			}
		}
	}
}

func TestWriteDeadLetters(t *testing.T) {
	t.Parallel()
	id := "msg_1"
	retried := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	dls := []DeadLetter{
		{ID: 1, EventID: &id, StreamSeq: 7, Subject: "clerk.user.updated", Error: "parsing user.updated:\nmalformed payload", PayloadBytes: 23, CreatedAt: retried},
		{ID: 2, StreamSeq: 9, Subject: "clerk.user.created", Error: "failed 20 times", PayloadBytes: 1500, CreatedAt: retried, RetriedAt: &retried},
	}
	var table bytes.Buffer
	if err := WriteDeadLetters(&table, dls, false); err != nil {
		t.Fatal(err)
	}
	want := `ID  SEQ  SUBJECT             EVENT ID  CREATED               RETRIED               BYTES  ERROR
1   7    clerk.user.updated  msg_1     2025-01-02T03:04:05Z  -                     23     parsing user.updated: malformed payload
2   9    clerk.user.created  -         2025-01-02T03:04:05Z  2025-01-02T03:04:05Z  1500   failed 20 times
`
	if diff := cmp.Diff(want, table.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	var lines bytes.Buffer
	if err := WriteDeadLetters(&lines, dls, true); err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"id":1,"event_id":"msg_1","stream_seq":7,"subject":"clerk.user.updated","error":"parsing user.updated:\nmalformed payload","payload_bytes":23,"created_at":"2025-01-02T03:04:05Z","retried_at":null}
{"id":2,"event_id":null,"stream_seq":9,"subject":"clerk.user.created","error":"failed 20 times","payload_bytes":1500,"created_at":"2025-01-02T03:04:05Z","retried_at":"2025-01-02T03:04:05Z"}
`
	if diff := cmp.Diff(wantJSON, lines.String()); diff != "" {
		t.Errorf("JSON lines (-want +got):\n%s", diff)
	}
	var empty bytes.Buffer
	_ = WriteDeadLetters(&empty, nil, false)
	if !strings.Contains(empty.String(), "(no dead letters)") {
		t.Errorf("empty table: %q", empty.String())
	}
}

// TestReplayReports: what the replay's lines say. The start names only the start given; a dry run
// says what would be parked, not that it was; the end has the elapsed time; a --from-seq past the
// end of the stream is a warning.
func TestReplayReports(t *testing.T) {
	t.Parallel()
	b := setup(t)
	publish(t, b.js, created("msg_1", "user_1", 1700000000000), false)
	publishRaw(t, b.js, "clerk.user.updated", "msg_poison", []byte("{not json"), false)
	var logs bytes.Buffer
	// Read only after Replay returns; slog's handler serialises the writes meanwhile.
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	sum, err := Replay(context.Background(), b.cfg, ReplayOptions{FromSeq: 1, DryRun: true}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if sum.DeadLettered != 1 || count(t, b.pool, `SELECT count(*) FROM dead_letters`) != 0 {
		t.Errorf("dry run: summary %+v, want 1 would-park and nothing parked", sum)
	}
	lines := map[string]map[string]any{}
	for line := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		lines[m["msg"].(string)] = m
	}
	started, finished := lines["replay started"], lines["replay finished"]
	if _, ok := started["since"]; ok || started["from_seq"] != float64(1) {
		t.Errorf("replay started: %v, want from_seq and no since", started)
	}
	if _, ok := finished["dead_lettered"]; ok || finished["would_park"] != float64(1) || finished["elapsed"] == nil {
		t.Errorf("replay finished: %v, want would_park=1 (not dead_lettered) and elapsed", finished)
	}

	logs.Reset()
	if _, err := Replay(context.Background(), b.cfg, ReplayOptions{FromSeq: 999}, logger); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "past the end of the stream") {
		t.Errorf("no warning for a --from-seq past the end:\n%s", &logs)
	}
}
