package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/clerksync/clerksync/internal/clerkgen"
)

// IngestOptions configures Ingest.
type IngestOptions struct {
	// URL is the webhook endpoint, e.g. http://127.0.0.1:8080/webhooks/clerk.
	URL string
	// Secret is the whsec_ secret ingest verifies with.
	Secret   string
	Clients  int
	Workload Workload
	// Rate offers the deliveries at that many per second; 0 sends as fast as the clients go.
	Rate     float64
	Progress *Progress
	// Accepted, when set, is called from the clients for every 2xx, with when it arrived.
	Accepted func(i int, at time.Time, duplicate bool)
}

// Ingest posts the workload's deliveries to ingest, each signed as Svix signs (just before it is
// sent, outside the measured time), with o.Clients keep-alive connections.
func Ingest(ctx context.Context, stage string, o IngestOptions) (Result, error) {
	wh, err := svix.NewWebhook(o.Secret)
	if err != nil {
		return Result{}, fmt.Errorf("webhook secret: %w", err)
	}
	if _, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, nil); err != nil {
		return Result{}, fmt.Errorf("ingest url: %w", err)
	}
	client := newHTTPClient(o.Clients)
	defer client.CloseIdleConnections()
	o.Progress.Stage(stage, len(o.Workload.Deliveries))

	bufs := make([]bytes.Buffer, max(o.Clients, 1))
	r := drive(ctx, stage, load{Clients: o.Clients, Jobs: len(o.Workload.Deliveries), Rate: o.Rate, Progress: o.Progress},
		func(ctx context.Context, c, i int) (string, error) {
			d := o.Workload.Deliveries[i]
			now := time.Now()
			sig, err := wh.Sign(d.ID, now, d.Body)
			if err != nil {
				return "", err
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL, bytes.NewReader(d.Body))
			if err != nil {
				return "", err
			}
			req.Header.Set(clerkgen.HeaderID, d.ID)
			req.Header.Set(clerkgen.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
			req.Header.Set(clerkgen.HeaderSignature, sig)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "Svix-Webhooks/1.99 (clerksync loadgen)")
			resp, err := client.Do(req)
			if err != nil {
				return "", err
			}
			buf := &bufs[c]
			buf.Reset()
			_, err = buf.ReadFrom(io.LimitReader(resp.Body, 1<<20))
			_ = resp.Body.Close()
			if err != nil {
				return "", err
			}
			at := time.Now()
			if resp.StatusCode/100 == 2 && o.Accepted != nil {
				var a struct {
					Duplicate bool `json:"duplicate"`
				}
				_ = json.Unmarshal(buf.Bytes(), &a)
				o.Accepted(i, at, a.Duplicate)
			}
			return strconv.Itoa(resp.StatusCode), nil
		})
	r.Note = fmt.Sprintf("%d webhooks (%d distinct svix-ids) of %.1f KB on average",
		len(o.Workload.Deliveries), o.Workload.Unique(), avgKB(o.Workload))
	return r, nil
}

func avgKB(w Workload) float64 {
	if len(w.Deliveries) == 0 {
		return 0
	}
	return float64(w.Bytes()) / float64(len(w.Deliveries)) / 1000
}

// newHTTPClient is a keep-alive client with one connection per load client, straight to the
// target: a proxy from the environment would measure the proxy.
func newHTTPClient(clients int) *http.Client {
	clients = max(clients, 1)
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        clients,
			MaxIdleConnsPerHost: clients,
			MaxConnsPerHost:     clients,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
