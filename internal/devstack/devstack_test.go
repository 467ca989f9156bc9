package devstack

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/clerksync/clerksync/internal/clerk"
	"github.com/clerksync/clerksync/internal/clerkgen"
	"github.com/clerksync/clerksync/internal/session"
)

func TestStateKeepsSecretsAcrossSaves(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := loadState(dir); err == nil || !strings.Contains(err.Error(), "start the stack first") {
		t.Fatalf("loadState of an empty directory: %v", err)
	}
	var st State
	if err := st.ensureSecrets(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(st.WebhookSecret, "whsec_") || st.KeyID == "" {
		t.Fatalf("ensureSecrets made secret %q, kid %q", st.WebhookSecret, st.KeyID)
	}
	st.LastUser = "user_1"
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, stateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	got, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.ensureSecrets(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Errorf("state after a save, a load and ensureSecrets (-want +got):\n%s", diff)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("save left %d files, want only %s", len(entries), stateFile)
	}
}

// TestTokenPassesTheAPIsVerifier checks a minted token against the verifier the api uses,
// configured as the dev stack configures the api.
func TestTokenPassesTheAPIsVerifier(t *testing.T) {
	t.Parallel()
	var st State
	if err := st.ensureSecrets(); err != nil {
		t.Fatal(err)
	}
	jwks, err := st.jwks()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(jwks) }))
	t.Cleanup(srv.Close)
	st.Issuer, st.AuthorizedParty = srv.URL, DefaultAuthorizedParty
	v, err := session.New(session.Options{
		JWKSURL:           srv.URL + "/.well-known/jwks.json",
		Issuer:            st.Issuer,
		AuthorizedParties: []string{DefaultAuthorizedParty},
		Leeway:            5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)

	now := time.Now()
	token, err := st.mint("user_42", "", now)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("the api's verifier refuses a dev token: %v", err)
	}
	if claims.UserID() != "user_42" || claims.AuthorizedParty != DefaultAuthorizedParty || !strings.HasPrefix(claims.SessionID, "sess_") {
		t.Errorf("claims = %+v", claims)
	}
	if ttl := claims.ExpiresAt.Sub(claims.IssuedAt.Time); ttl != TokenTTL {
		t.Errorf("token lives %v, want %v", ttl, TokenTTL)
	}

	var other State
	if err := other.ensureSecrets(); err != nil {
		t.Fatal(err)
	}
	other.Issuer, other.KeyID = st.Issuer, st.KeyID
	forged, err := other.mint("user_42", "", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), forged); err == nil {
		t.Fatal("a token signed by another key was accepted")
	}
}

func TestGenerateDefaults(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_750_000_000_000)
	st := &State{}
	r := profileRand("seed")

	if _, err := generate(r, st, &Sent{Type: clerkgen.UserUpdated}, now); err == nil || !strings.Contains(err.Error(), "--user") {
		t.Fatalf("user.updated with no user sent yet: %v", err)
	}
	if _, err := generate(r, st, &Sent{Type: "session.created"}, now); err == nil || !strings.Contains(err.Error(), "--file") {
		t.Fatalf("session.created: %v", err)
	}

	created := &Sent{Type: clerkgen.UserCreated}
	body, err := generate(r, st, created, now)
	if err != nil {
		t.Fatal(err)
	}
	first, err := clerk.ParseUserEvent(body)
	if err != nil || first.ClerkUserID != created.UserID || !strings.HasPrefix(created.UserID, "user_") {
		t.Fatalf("user.created: %+v, %v", first, err)
	}
	st.LastUser = created.UserID

	updated := &Sent{Type: clerkgen.UserUpdated}
	body, err = generate(r, st, updated, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	second, err := clerk.ParseUserEvent(body)
	if err != nil || second.ClerkUserID != created.UserID {
		t.Fatalf("user.updated defaults to the last user: %+v, %v", second, err)
	}
	if !second.User.CreatedAt.Equal(*first.User.CreatedAt) || !second.User.UpdatedAt.After(first.User.UpdatedAt) {
		t.Errorf("update: created %v (want %v), updated %v (want after %v)", second.User.CreatedAt, first.User.CreatedAt, second.User.UpdatedAt, first.User.UpdatedAt)
	}
}

func TestSendFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var st State
	if err := st.ensureSecrets(); err != nil {
		t.Fatal(err)
	}
	wh, err := svix.NewWebhook(st.WebhookSecret)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		if r.URL.Path != "/webhooks/clerk" || wh.Verify(got, r.Header) != nil {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": r.Header.Get("svix-id"), "duplicate": false})
	}))
	t.Cleanup(srv.Close)
	st.IngestURL = srv.URL
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}

	fixture := filepath.Join("..", "clerk", "testdata", "user.deleted.json")
	want, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	sent, err := Send(context.Background(), SendOptions{DataDir: dir, File: fixture}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if sent.Response.StatusCode != http.StatusOK || sent.Type != "user.deleted" || sent.UserID != "user_29wBMCtzATuFJut8jO2VNTVekS4" {
		t.Fatalf("Send(file) = %+v", sent)
	}
	if string(got) != string(want) {
		t.Error("Send changed the file's bytes")
	}
	if st, _ := loadState(dir); st.LastUser != sent.UserID {
		t.Errorf("last user = %q, want %q", st.LastUser, sent.UserID)
	}

	if _, err := Send(context.Background(), SendOptions{DataDir: dir, File: fixture, Type: "user.created"}, time.Now()); err == nil {
		t.Fatal("Send accepted a file whose type is not the one asked for")
	}
}
