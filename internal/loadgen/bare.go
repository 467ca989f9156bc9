package loadgen

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/clerksync/clerksync/internal/event"
)

// BareHandler is the least any Svix → JetStream receiver does, the baseline ingest is held to:
// a plain net/http handler that reads the body (bounded), computes one HMAC-SHA256 over
// id.timestamp.body with crypto/hmac and compares it with the signatures sent, publishes the body
// with Nats-Msg-Id and waits for the PubAck, and answers 200. Nothing more: no envelope check, no
// timestamp tolerance, no metrics, no logs. It publishes into a scratch stream configured like
// CLERK on the same server, deleted by Close.
type BareHandler struct {
	URL string

	srv    *http.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	stream string
}

// StartBareHandler starts a bare handler for the webhook secret on loopback, publishing to the
// NATS server at natsURL.
func StartBareHandler(ctx context.Context, natsURL, secret string) (*BareHandler, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return nil, errors.New("bare handler: the webhook secret is not whsec_ followed by base64")
	}
	nc, err := nats.Connect(natsURL, nats.Name("clerksync-loadgen-bare"))
	if err != nil {
		return nil, fmt.Errorf("connecting to nats: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	id := strconv.FormatInt(time.Now().UnixNano(), 36)
	subject := "loadgen.bare." + id
	cfg, err := scratchStreamConfig(ctx, js, event.StreamConfig{}, "LOADGEN_BARE_"+id, subject)
	if err == nil {
		_, err = js.CreateStream(ctx, cfg)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("creating the bare handler's stream: %w", err)
	}
	b := &BareHandler{nc: nc, js: js, stream: cfg.Name}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 256<<10)); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		msgID, ts := r.Header.Get("Svix-Id"), r.Header.Get("Svix-Timestamp")
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(msgID))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(buf.Bytes())
		want := []byte("v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		ok := false
		for sig := range strings.FieldsSeq(r.Header.Get("Svix-Signature")) {
			ok = ok || hmac.Equal([]byte(sig), want)
		}
		if !ok {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		msg := nats.NewMsg(subject + ".webhook")
		msg.Data = buf.Bytes()
		msg.Header.Set(jetstream.MsgIDHeader, msgID)
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	b.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	b.URL = "http://" + ln.Addr().String() + "/webhooks/clerk"
	go func() { _ = b.srv.Serve(ln) }()
	return b, nil
}

// Close stops the handler and deletes its stream.
func (b *BareHandler) Close() error {
	if b.srv != nil {
		_ = b.srv.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := b.js.DeleteStream(ctx, b.stream)
	b.nc.Close()
	return err
}
