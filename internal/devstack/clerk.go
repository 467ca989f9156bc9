package devstack

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/clerkgen"
)

// SendOptions says what Send delivers.
type SendOptions struct {
	DataDir string
	// Type is the event type. With File it may be empty; when set it must match the file's.
	Type string
	// UserID defaults to a new user for user.created, else to the user the last send was about.
	UserID string
	// File is a payload to send as it is, instead of a generated one.
	File string
	// OrgID is the organization of an organization or membership event: default a new one for
	// organization.created, else the organization the last such send was about.
	OrgID string
	// Role is a membership's role (default org:admin on create, org:member on update).
	Role string
}

// Sent is what Send delivered and what ingest answered.
type Sent struct {
	MessageID string
	Type      string
	UserID    string // "" when a file's payload is not a user event
	OrgID     string // "" unless it is an organization or membership event
	Response  clerkgen.Response
}

// Send signs a realistic Clerk payload (or o.File) with the running stack's webhook secret
// and posts it to its ingest, as Svix would. Any answer is a Sent; an error means no answer.
func Send(ctx context.Context, o SendOptions, now time.Time) (Sent, error) {
	dir := dataDir(o.DataDir)
	st, err := loadState(dir)
	if err != nil {
		return Sent{}, err
	}
	r := rand.New(rand.NewChaCha8(seed()))
	sent := Sent{MessageID: clerkgen.NewMessageID(r), Type: o.Type, UserID: o.UserID, OrgID: o.OrgID}

	var body []byte
	if o.File != "" {
		if body, err = os.ReadFile(o.File); err != nil {
			return Sent{}, err
		}
		// A payload that does not parse is sent all the same: seeing ingest refuse it is the point.
		if env, err := clerk.ParseEnvelope(body); err == nil {
			if o.Type != "" && o.Type != env.Type {
				return Sent{}, fmt.Errorf("%s is a %s event, not %s", o.File, env.Type, o.Type)
			}
			sent.Type = env.Type
			if strings.HasPrefix(env.Type, "user.") {
				sent.UserID = env.DataID
			}
		}
	} else {
		if strings.HasPrefix(o.Type, "organization") {
			body, err = generateOrg(r, &st, &sent, o.Role, now)
		} else {
			body, err = generate(r, &st, &sent, now)
		}
		if err != nil {
			return Sent{}, err
		}
	}

	if st.IngestURL == "" {
		return Sent{}, fmt.Errorf("no ingest URL in %s: start the stack first (go run ./cmd/dev)", dir)
	}
	resp, err := clerkgen.Post(ctx, nil, st.IngestURL+"/webhooks/clerk", st.WebhookSecret, sent.MessageID, body)
	if err != nil {
		return Sent{}, fmt.Errorf("%w (is the dev stack running? go run ./cmd/dev)", err)
	}
	sent.Response = resp
	if resp.StatusCode == http.StatusOK && sent.OrgID != "" {
		st.LastOrg = sent.OrgID
	}
	if resp.StatusCode == http.StatusOK && (sent.UserID != "" || sent.OrgID != "") {
		if sent.UserID != "" {
			st.LastUser = sent.UserID
		}
		if sent.Type == clerkgen.UserDeleted && !slices.Contains(st.Deleted, sent.UserID) {
			st.Deleted = append(st.Deleted, sent.UserID)
		}
		if err := st.save(dir); err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// generate builds the payload of sent.Type for sent.UserID (defaulted as SendOptions says),
// recording a created user's creation time in st.
func generate(r *rand.Rand, st *State, sent *Sent, now time.Time) ([]byte, error) {
	switch sent.Type {
	case clerkgen.UserCreated:
		if sent.UserID == "" {
			sent.UserID = clerkgen.NewUserID(r)
		}
	case clerkgen.UserUpdated, clerkgen.UserDeleted:
		if sent.UserID == "" {
			sent.UserID = st.LastUser
		}
		if sent.UserID == "" {
			return nil, fmt.Errorf("no user to send %s about: pass --user ID, or send user.created first", sent.Type)
		}
	case "":
		return nil, errors.New("no event type: say which, e.g. user.created")
	default:
		return nil, fmt.Errorf("no sample payload for %s: pass one with --file (examples/ has Clerk-shaped payloads, e.g. --file examples/session.created.json)", sent.Type)
	}

	created := now
	if ms, ok := st.Created[sent.UserID]; ok {
		created = time.UnixMilli(ms)
	}
	// The same user id always gets the same profile, so an update reads as one.
	u := clerkgen.NewUser(profileRand(sent.UserID), sent.UserID, created)
	switch sent.Type {
	case clerkgen.UserCreated:
		if st.Created == nil {
			st.Created = map[string]int64{}
		}
		st.Created[u.ID] = u.CreatedAt.UnixMilli()
		return clerkgen.CreatedBody(u), nil
	case clerkgen.UserUpdated:
		return clerkgen.UpdatedBody(u.Updated(r, now)), nil
	default:
		return clerkgen.DeletedBody(u.ID, now), nil
	}
}

// generateOrg builds the payload of an organization or membership event (sent.Type) for
// sent.OrgID (and sent.UserID for a membership), defaulted as SendOptions says.
func generateOrg(r *rand.Rand, st *State, sent *Sent, role string, now time.Time) ([]byte, error) {
	switch sent.Type {
	case clerkgen.OrganizationCreated:
		if sent.OrgID == "" {
			sent.OrgID = clerkgen.NewOrgID(r)
		}
	case clerkgen.OrganizationUpdated, clerkgen.OrganizationDeleted,
		clerkgen.MembershipCreated, clerkgen.MembershipUpdated, clerkgen.MembershipDeleted:
		if sent.OrgID == "" {
			sent.OrgID = st.LastOrg
		}
		if sent.OrgID == "" {
			return nil, fmt.Errorf("no organization to send %s about: pass --org ID, or send organization.created first", sent.Type)
		}
	default:
		return nil, fmt.Errorf("no sample payload for %s: pass one with --file (examples/ has Clerk-shaped payloads, e.g. --file examples/session.created.json)", sent.Type)
	}
	if st.OrgCreated == nil {
		st.OrgCreated = map[string]int64{}
	}
	createdAt := func(id string) time.Time {
		if ms, ok := st.OrgCreated[id]; ok {
			return time.UnixMilli(ms)
		}
		st.OrgCreated[id] = now.UnixMilli()
		return now.Truncate(time.Millisecond)
	}
	// The same organization id always gets the same name and slug.
	pr := profileRand(sent.OrgID)
	name := orgNames[pr.IntN(len(orgNames))]
	org := clerkgen.Organization{ID: sent.OrgID, Name: name, Slug: strings.ToLower(name) + "-" + strings.ToLower(sent.OrgID[len(sent.OrgID)-4:]),
		CreatedAt: createdAt(sent.OrgID), UpdatedAt: now}
	if strings.HasPrefix(sent.Type, "organization.") {
		return clerkgen.OrganizationBody(sent.Type, org, now), nil
	}

	if sent.UserID == "" {
		sent.UserID = st.LastUser
	}
	if sent.UserID == "" {
		return nil, fmt.Errorf("no user to send %s about: pass --user ID, or send user.created first", sent.Type)
	}
	userCreated := now
	if ms, ok := st.Created[sent.UserID]; ok {
		userCreated = time.UnixMilli(ms)
	}
	// One membership per organization and user, with an id derived from both.
	memID := clerkgen.NewMembershipID(profileRand(sent.OrgID + "|" + sent.UserID))
	if role == "" {
		role = "org:admin"
		if sent.Type == clerkgen.MembershipUpdated {
			role = "org:member"
		}
	}
	return clerkgen.MembershipBody(sent.Type, clerkgen.Membership{
		ID: memID, Org: org, User: clerkgen.NewUser(profileRand(sent.UserID), sent.UserID, userCreated),
		Role: role, CreatedAt: createdAt(memID), UpdatedAt: now,
	}, now), nil
}

var orgNames = []string{"Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"}

func profileRand(userID string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(userID))
	return rand.New(rand.NewPCG(h.Sum64(), 0))
}

func seed() [32]byte {
	var s [32]byte
	_, _ = crand.Read(s[:])
	return s
}

// Token mints a session token for userID (default: the user the last send was about) that the
// running stack's api accepts, valid for TokenTTL from now. A non-empty orgID makes it the
// session's active organization: a v2 token's o claim, as Clerk mints it.
func Token(dataDirPath, userID, orgID string, now time.Time) (token, user string, err error) {
	st, err := loadState(dataDir(dataDirPath))
	if err != nil {
		return "", "", err
	}
	if userID == "" {
		userID = st.LastUser
	}
	if userID == "" {
		return "", "", errors.New("no user: pass --user ID, or send user.created first")
	}
	token, err = st.mint(userID, orgID, now)
	return token, userID, err
}

func dataDir(dir string) string {
	if dir == "" {
		return ".data"
	}
	return dir
}
