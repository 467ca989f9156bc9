// Package event is the contract between ingest and the worker: the JetStream stream, its
// subjects, and the headers every message carries. Ingest writes messages with these names and
// the worker reads them; neither may invent its own. It must not parse Clerk payloads (that is
// package clerk) nor touch Postgres.
package event

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream and its subjects.
const (
	Stream        = "CLERK"
	SubjectPrefix = "clerk."
	// Subjects is everything the stream keeps: the full Clerk event log.
	Subjects = SubjectPrefix + ">"
	// UserSubjects, OrganizationSubjects and MembershipSubjects are what the worker consumes
	// (WorkerSubjects); every other type stays in the stream only.
	UserSubjects         = SubjectPrefix + "user.>"
	OrganizationSubjects = SubjectPrefix + "organization.>"
	MembershipSubjects   = SubjectPrefix + "organizationMembership.>"
)

// WorkerSubjects returns the subjects the worker's consumers filter: users, organizations and
// organization memberships.
func WorkerSubjects() []string {
	return []string{UserSubjects, OrganizationSubjects, MembershipSubjects}
}

// Message headers.
const (
	HeaderMsgID         = jetstream.MsgIDHeader // = svix-id: JetStream dedupes on it
	HeaderSvixID        = "Svix-Id"
	HeaderSvixTimestamp = "Svix-Timestamp"
	HeaderSvixSignature = "Svix-Signature"
	HeaderEventType     = "Clerk-Event-Type"
	HeaderReceivedAt    = "Received-At" // RFC 3339, UTC
	HeaderTraceparent   = "traceparent"
)

// ErrInvalidType means an event type does not match ^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$.
var ErrInvalidType = errors.New("invalid event type")

// ValidType reports whether typ is a well-formed Clerk event type: two or more dot-separated
// segments, each a letter followed by letters, digits or underscores. It is what keeps a type
// from injecting NATS wildcards or empty tokens into a subject.
func ValidType(typ string) bool {
	segments, start := 0, true
	for i := 0; i < len(typ); i++ {
		c := typ[i]
		switch {
		case c == '.':
			if start {
				return false
			}
			start = true
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			if start {
				segments++
			}
			start = false
		case '0' <= c && c <= '9', c == '_':
			if start {
				return false
			}
		default:
			return false
		}
	}
	return !start && segments >= 2
}

// Subject returns the subject of an event type, or ErrInvalidType.
func Subject(typ string) (string, error) {
	if !ValidType(typ) {
		return "", ErrInvalidType
	}
	return SubjectPrefix + typ, nil
}

// StreamConfig is what an operator may tune about the stream.
type StreamConfig struct {
	Replicas        int           `env:"STREAM_REPLICAS" envDefault:"1"`
	MaxAge          time.Duration `env:"STREAM_MAX_AGE" envDefault:"0"`
	DuplicateWindow time.Duration `env:"STREAM_DUPLICATE_WINDOW" envDefault:"10m"`
}

// EnsureStream creates the stream, or updates it to cfg when it exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = 10 * time.Minute
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Clerk webhooks as received and verified by clerksync ingest",
		Subjects:    []string{Subjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		// worker reconcile publishes a page of snapshots as one atomic batch: one flush for
		// the page instead of one per message (see Publisher.PublishBatch).
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, fmt.Errorf("ensuring stream %s: %w", Stream, err)
	}
	return s, nil
}
