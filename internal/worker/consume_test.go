package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clerksync/clerksync/internal/event/eventtest"
	"github.com/clerksync/clerksync/internal/postgres/postgrestest"
)

// bundle is one test's world: a fresh database, an embedded NATS server with the stream, and a
// worker configuration pointing at both.
type bundle struct {
	pool *pgxpool.Pool
	nats *eventtest.Server
	js   jetstream.JetStream
	cfg  Config
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dbURL := postgrestest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	srv := eventtest.NewServer(t)
	_, js := eventtest.Connect(t, srv.URL())
	return &bundle{pool: pool, nats: srv, js: js, cfg: Config{
		NATSURL:       srv.URL(),
		DatabaseURL:   dbURL,
		Addr:          "127.0.0.1:0",
		Consumer:      "clerk-users",
		BatchSize:     256,
		Parallelism:   2,
		MaxAttempts:   20,
		AckWait:       30 * time.Second,
		FetchWait:     100 * time.Millisecond,
		RetryDelay:    20 * time.Millisecond,
		RetryMaxDelay: 200 * time.Millisecond,
		NoMigrate:     true, // postgrestest's databases are migrated
	}}
}

// consumer builds the durable consumer the way Run does, for tests that drive batches by hand.
func (b *bundle) consumer(t *testing.T) *consumer {
	t.Helper()
	cons, err := ensureConsumer(context.Background(), b.js, b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	return newConsumer(b.cfg, testLogger(t), b.pool, b.js, cons, newMetrics(prometheus.NewRegistry()))
}

// fetch takes exactly n messages from the durable consumer.
func fetch(t *testing.T, c *consumer, n int) []jetstream.Msg {
	t.Helper()
	var msgs []jetstream.Msg
	waitFor(t, 10*time.Second, "messages to fetch", func() bool {
		batch, err := c.cons.FetchNoWait(n - len(msgs))
		if err != nil {
			t.Fatal(err)
		}
		more, _ := drain(batch)
		msgs = append(msgs, more...)
		return len(msgs) == n
	})
	return msgs
}

// settled waits until the consumer has nothing pending and nothing unacknowledged.
func settled(t *testing.T, cons jetstream.Consumer) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if info, err = cons.Info(context.Background()); err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("the consumer did not settle in 10s: %d pending, %d unacknowledged, %d redelivered, delivered %+v, ack floor %+v",
				info.NumPending, info.NumAckPending, info.NumRedelivered, info.Delivered, info.AckFloor)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliver publishes each batch, fetches it as one batch and hands it to the worker. An event
// published before in the same test is published again as a late Svix retry.
func deliver(t *testing.T, b *bundle, c *consumer, batches ...[]histEvent) {
	t.Helper()
	seen := map[string]bool{}
	for _, batch := range batches {
		for _, e := range batch {
			publish(t, b.js, e, seen[e.ID])
			seen[e.ID] = true
		}
		c.handle(context.Background(), fetch(t, c, len(batch)))
	}
	if info := settled(t, c.cons); info.NumRedelivered != 0 {
		t.Errorf("%d messages were redelivered; want every one acknowledged at once", info.NumRedelivered)
	}
}

// TestApplyRules has one row per rule of the projection, each applied through the durable
// consumer in the batches given.
func TestApplyRules(t *testing.T) {
	t.Parallel()
	const u = "user_29w83sxmDNGwOuEthce5gg56FcC"
	create := created("msg_create", u, 1654012591835)
	update := updated("msg_update", u, 1654012824306)
	older := updated("msg_older", u, 1654012700000)
	// Two versions with the same updated_at: the greater svix-id as bytes wins. 'a' (0x61) is
	// greater than 'B' (0x42) in bytes, though a locale collation sorts "msg_a" first.
	tieLow, tieHigh := updated("msg_B", u, 1654012900000), updated("msg_a", u, 1654012900000)
	del := deleted("msg_delete", u, 1661861640000)
	earlierDel := deleted("msg_delete_early", u, 1661861000000)
	afterDel := updated("msg_after_delete", u, 1661900000000)
	recreate := created("msg_recreate", u, 1661900000001)

	twoEmails := updated("msg_two_emails", u, 1654013000000)
	twoEmails.Emails = []emailAddr{{"idn_first", "first@example.org"}, {"idn_second", "second@example.org"}}
	twoEmails.PrimaryID = ptr("idn_second")
	nullPrimary := updated("msg_null_primary", u, 1654013000000)
	nullPrimary.PrimaryID = nil
	danglingPrimary := updated("msg_dangling_primary", u, 1654013000000)
	danglingPrimary.PrimaryID = ptr("idn_gone")
	noNames := created("msg_no_names", u, 1654012591835)
	noNames.Username, noNames.FirstName, noNames.LastName, noNames.ImageURL, noNames.CreatedAt = nil, nil, nil, nil, nil

	edge := created("msg_edge", u, 1654012591835)
	edge.Type = "user.createdAtEdge"

	type batches = [][]histEvent
	tests := []struct {
		name    string
		batches batches
		want    map[string]userState
	}{
		{"create makes the row, a free active subscription and zero usage",
			batches{{create}}, map[string]userState{u: live(t, create)}},
		{"a newer update applies",
			batches{{create}, {update}}, map[string]userState{u: live(t, update)}},
		{"an older update changes nothing",
			batches{{update}, {older}}, map[string]userState{u: live(t, update)}},
		{"a tie on updated_at goes to the greater svix-id in bytes",
			batches{{tieHigh}, {tieLow}}, map[string]userState{u: live(t, tieHigh)}},
		{"a tie on updated_at goes to the greater svix-id in bytes, other order",
			batches{{tieLow}, {tieHigh}}, map[string]userState{u: live(t, tieHigh)}},
		{"a tie inside one batch goes to the greater svix-id in bytes",
			batches{{tieLow, tieHigh}}, map[string]userState{u: live(t, tieHigh)}},
		{"delete leaves a scrubbed tombstone and cancels the subscription",
			batches{{create}, {update}, {del}}, map[string]userState{u: tombstone(u, del.At)}},
		{"the earliest delete's timestamp is deleted_at",
			batches{{del}, {earlierDel}}, map[string]userState{u: tombstone(u, earlierDel.At)}},
		{"a later delete does not move deleted_at",
			batches{{earlierDel}, {del}}, map[string]userState{u: tombstone(u, earlierDel.At)}},
		{"an update after the delete does not resurrect",
			batches{{create}, {del}, {afterDel}}, map[string]userState{u: tombstone(u, del.At)}},
		{"a create after the delete does not resurrect",
			batches{{del}, {recreate}}, map[string]userState{u: tombstone(u, del.At)}},
		{"update before create converges",
			batches{{update}, {create}}, map[string]userState{u: live(t, update)}},
		{"delete before create converges, subscription canceled",
			batches{{del}, {create}, {update}}, map[string]userState{u: tombstone(u, del.At)}},
		{"a duplicate in a later batch is skipped",
			batches{{update}, {create}, {update}}, map[string]userState{u: live(t, update)}},
		{"a duplicate inside one batch is skipped",
			batches{{create, create, update, update}}, map[string]userState{u: live(t, update)}},
		{"several events for one user in one batch fold to the newest",
			batches{{update, create, older, tieLow}}, map[string]userState{u: live(t, tieLow)}},
		{"a delete inside a batch wins over its updates",
			batches{{create, del, afterDel, earlierDel, update}}, map[string]userState{u: tombstone(u, earlierDel.At)}},
		{"the primary email is the address primary_email_address_id names",
			batches{{twoEmails}}, map[string]userState{u: live(t, twoEmails)}},
		{"a null primary_email_address_id leaves email null",
			batches{{nullPrimary}}, map[string]userState{u: live(t, nullPrimary)}},
		{"a primary id naming no address leaves email null",
			batches{{danglingPrimary}}, map[string]userState{u: live(t, danglingPrimary)}},
		{"null names and no created_at stay null",
			batches{{noNames}}, map[string]userState{u: live(t, noNames)}},
		{"an unknown user event type is acknowledged and ignored",
			batches{{edge}}, map[string]userState{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			deliver(t, b, b.consumer(t), tt.batches...)
			if diff := cmp.Diff(tt.want, readState(t, b.pool)); diff != "" {
				t.Errorf("projection (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("fixtures as Clerk sends them", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.consumer(t)
		fixtureID := "user_29w83sxmDNGwOuEthce5gg56FcC"
		for i, name := range []string{"user.created", "user.updated"} {
			body, err := json.Marshal(fixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			publishRaw(t, b.js, "clerk."+name, "msg_fixture_"+name, body, false)
			c.handle(context.Background(), fetch(t, c, 1))
			got := readState(t, b.pool)[fixtureID]
			if got.Email == nil || *got.Email != "example@example.org" || got.Status == nil || *got.Status != "active" {
				t.Fatalf("after %s (%d): got %+v", name, i, got)
			}
		}
		// The deleted fixture names another user: it is a delete first seen before any create.
		body, _ := json.Marshal(fixture(t, "user.deleted"))
		publishRaw(t, b.js, "clerk.user.deleted", "msg_fixture_deleted", body, false)
		c.handle(context.Background(), fetch(t, c, 1))
		deletedID := "user_29wBMCtzATuFJut8jO2VNTVekS4"
		want := tombstone(deletedID, ms(1661861640000))
		if diff := cmp.Diff(want, readState(t, b.pool)[deletedID]); diff != "" {
			t.Errorf("tombstone (-want +got):\n%s", diff)
		}
		if got := readState(t, b.pool)[fixtureID]; got.ClerkUpdatedAt == nil || !got.ClerkUpdatedAt.Equal(ms(1654012824306)) {
			t.Errorf("clerk_updated_at = %v, want the user.updated fixture's", got.ClerkUpdatedAt)
		}
	})
}

// TestPoisonIsParkedAlone checks that a message that can never apply is parked with what an
// operator needs and terminated, while the rest of its batch applies.
func TestPoisonIsParkedAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.consumer(t)
	first, second := created("msg_first", "user_first", 1700000000000), created("msg_second", "user_second", 1700000000000)
	noUpdatedAt := first.body(t)
	noUpdatedAt = bytes.Replace(noUpdatedAt, []byte(`"updated_at":1700000000000`), []byte(`"updated_at":"yesterday"`), 1)

	publish(t, b.js, first, false)
	seqJSON := publishRaw(t, b.js, "clerk.user.updated", "msg_not_json", []byte("{not json"), false)
	seqField := publishRaw(t, b.js, "clerk.user.created", "msg_bad_field", noUpdatedAt, false)
	seqNoID := publishRaw(t, b.js, "clerk.user.created", "", second.body(t), false)
	publish(t, b.js, second, false)
	c.handle(context.Background(), fetch(t, c, 5))
	settled(t, c.cons)

	want := map[string]userState{"user_first": live(t, first), "user_second": live(t, second)}
	if diff := cmp.Diff(want, readState(t, b.pool)); diff != "" {
		t.Errorf("projection (-want +got):\n%s", diff)
	}
	type parked struct {
		Seq     uint64
		Subject string
		EventID *string
		Payload []byte
	}
	rows, err := b.pool.Query(context.Background(), `SELECT stream_seq, subject, event_id, payload, error FROM dead_letters ORDER BY stream_seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []parked
	for rows.Next() {
		var p parked
		var reason string
		if err := rows.Scan(&p.Seq, &p.Subject, &p.EventID, &p.Payload, &reason); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(reason, "malformed") && !strings.Contains(reason, "Svix-Id") {
			t.Errorf("dead letter %d: error %q does not say what is wrong", p.Seq, reason)
		}
		got = append(got, p)
	}
	wantParked := []parked{
		{seqJSON, "clerk.user.updated", ptr("msg_not_json"), []byte("{not json")},
		{seqField, "clerk.user.created", ptr("msg_bad_field"), noUpdatedAt},
		{seqNoID, "clerk.user.created", nil, second.body(t)},
	}
	if diff := cmp.Diff(wantParked, got); diff != "" {
		t.Errorf("dead letters (-want +got):\n%s", diff)
	}
	if n := count(t, b.pool, `SELECT count(*) FROM processed_events`); n != 2 {
		t.Errorf("processed_events has %d rows, want 2", n)
	}
}
