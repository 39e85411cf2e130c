package main

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/edge/fleet"
	"github.com/edgekit/edgekit/edge/fleet/artifacts"
	"github.com/edgekit/edgekit/edge/fleet/fleetapi"
	"github.com/edgekit/edgekit/edge/fleet/store"
	"github.com/edgekit/edgekit/edge/fleet/store/boltstore"
	"github.com/edgekit/edgekit/edge/fleet/store/pgstore"
	"github.com/edgekit/edgekit/edge/fleet/webconsole"
	"github.com/edgekit/edgekit/internal/safefile"
)

// serve runs a fleet until ctx ends (SIGINT or SIGTERM): on the broker, with its
// store, the fleet's API, the artifact server and the web console (under
// /ui/) on one listener. The token is <data>/api-token (made at the first
// start).
func serve(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	brokerURL := fs.String("broker", "mqtt://127.0.0.1:1883", "the gateways' MQTT broker")
	data := fs.String("data", "fleet", "the fleet's directory: api-token, the embedded store, the artifacts")
	storeURL := fs.String("store", "", "bolt:PATH (default bolt:<data>/fleet.db) or postgres:DSN (replicas share one)")
	listen := fs.String("listen", "127.0.0.1:7700", "the API's address")
	keys := fs.String("keys", "", "public keys (hex, comma-separated) a package's signature must verify with; none: unsigned packages are taken")
	replica := fs.String("replica", "", "this replica's name (default random)")
	publicURL := fs.String("url", "", "the URL gateways and browsers reach this fleet at (default http://<listen>): the packages uploaded in the web console are fetched from it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := os.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	token, err := safefile.Secret(filepath.Join(*data, "api-token"))
	if err != nil {
		return err
	}
	var verify []ed25519.PublicKey
	for _, k := range strings.Split(*keys, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		b, err := hex.DecodeString(k)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return fmt.Errorf("-keys: %q is not an ed25519 public key in hex", k)
		}
		verify = append(verify, b)
	}
	st, err := openStore(ctx, *storeURL, *data)
	if err != nil {
		return err
	}
	defer st.Close(context.WithoutCancel(ctx))
	// No broker session: a replica that dies leaves no share of the
	// reports queued for it (the others and the retained reports cover).
	up, err := mqttbus.New(&mqttbus.Options{Brokers: []string{*brokerURL}, ClientID: "edgekit-fleet-" + hostOr(*replica), SessionExpiry: -1,
		QueueDir: filepath.Join(*data, "queue"), Logger: log})
	if err != nil {
		return err
	}
	defer up.Close(context.WithoutCancel(ctx))
	f, err := fleet.New(&fleet.Options{Store: st, Bus: up, Replica: *replica, Logger: log})
	if err != nil {
		return err
	}
	api, err := fleetapi.New(f, &fleetapi.Options{Token: token, Logger: log})
	if err != nil {
		return err
	}
	arts, err := artifacts.Open(filepath.Join(*data, "artifacts"), &artifacts.Options{Token: token, Keys: verify})
	if err != nil {
		return err
	}
	artHandler, err := arts.Handler()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	base := *publicURL
	if base == "" {
		base = "http://" + ln.Addr().String()
	}
	web, err := webconsole.New(ctx, f, &webconsole.Options{Token: token, Artifacts: arts, ArtifactBase: base, Secure: strings.HasPrefix(base, "https:"), Logger: log})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(webconsole.Prefix+"/", web)
	mux.Handle("GET /{$}", http.RedirectHandler(webconsole.Prefix+"/", http.StatusSeeOther))
	mux.Handle("/v1/blobs", artHandler)
	mux.Handle("/blobs/", artHandler)
	mux.Handle("/v1/manifests/", artHandler)
	mux.Handle("/", api)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	ran := make(chan error, 1)
	go func() { ran <- f.Run(ctx) }()
	log.Info("console: the fleet serves", "url", "http://"+ln.Addr().String(), "broker", *brokerURL, "token-file", filepath.Join(*data, "api-token"))
	fmt.Fprintln(out, "serving on http://"+ln.Addr().String())
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-ran:
	case runErr = <-served:
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = web.Close(sctx) // ends the event streams, which Shutdown would wait for
	_ = srv.Shutdown(sctx)
	_ = f.Close(sctx)
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

func openStore(ctx context.Context, url, data string) (store.Store, error) {
	switch {
	case url == "":
		return boltstore.Open(filepath.Join(data, "fleet.db"), nil)
	case strings.HasPrefix(url, "bolt:"):
		return boltstore.Open(strings.TrimPrefix(url, "bolt:"), nil)
	case strings.HasPrefix(url, "postgres:"):
		return pgstore.Open(ctx, strings.TrimPrefix(url, "postgres:"), nil)
	}
	return nil, fmt.Errorf("-store %q: want bolt:PATH or postgres:DSN", url)
}

func hostOr(s string) string {
	if s != "" {
		return s
	}
	h, _ := os.Hostname()
	return h
}
