package clerkgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	svix "github.com/svix/svix-webhooks/go"
)

// The headers Svix signs a delivery with.
const (
	HeaderID        = "svix-id"
	HeaderTimestamp = "svix-timestamp"
	HeaderSignature = "svix-signature"
)

// NewSecret returns a new webhook signing secret as Clerk's dashboard shows one: "whsec_" and
// the base64 of 24 random bytes.
func NewSecret() string {
	key := make([]byte, 24)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// Sign returns the svix-id, svix-timestamp and svix-signature headers of a delivery of body
// with message id id at time at, signed with secret ("whsec_…") as Svix does.
func Sign(secret, id string, at time.Time, body []byte) (http.Header, error) {
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		return nil, fmt.Errorf("clerkgen: webhook secret: %w", err)
	}
	sig, err := wh.Sign(id, at, body)
	if err != nil {
		return nil, fmt.Errorf("clerkgen: signing: %w", err)
	}
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, sig)
	return h, nil
}

// Response is what the receiver answered.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// maxResponse bounds how much of an answer Post reads.
const maxResponse = 1 << 20

// Post delivers body to url as Svix would: a POST signed now with secret under message id id.
// A nil client means one with a 30 s timeout. An error means no answer; any status is a
// Response.
func Post(ctx context.Context, client *http.Client, url, secret, id string, body []byte) (Response, error) {
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	h, err := Sign(secret, id, time.Now(), body)
	if err != nil {
		return Response{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Response{}, fmt.Errorf("clerkgen: %w", err)
	}
	req.Header = h
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Svix-Webhooks/1.99 (clerkgen)")
	resp, err := client.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("clerkgen: posting to %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return Response{}, fmt.Errorf("clerkgen: reading the answer from %s: %w", url, err)
	}
	return Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: b}, nil
}
