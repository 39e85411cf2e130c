package mqttbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/edgekit/edgekit/edge/broker"
	"github.com/edgekit/edgekit/edge/bus"
	"github.com/edgekit/edgekit/edge/bus/bustest"
	"github.com/edgekit/edgekit/edge/bus/mqttbus"
	"github.com/edgekit/edgekit/internal/brokertest"
)

// A TLS listener that requires client certificates: a client with one
// exchanges messages; a client without one never connects.
func TestTLSWithClientCertificates(t *testing.T) {
	certs := brokertest.NewTLS(t)
	b := brokertest.Start(t, &broker.Options{
		Listeners: []broker.Listener{{Address: "127.0.0.1:0", TLS: &broker.TLS{
			CertFile: certs.CertFile, KeyFile: certs.KeyFile, CAFile: certs.CAFile, RequireClientCert: true,
		}}},
	})
	if got := b.URL().Scheme; got != "mqtts" {
		t.Fatalf("URL scheme %q, want mqtts", got)
	}
	ctx := context.Background()
	c := brokertest.Connect(t, b, mqttbus.Options{TLSConfig: certs.Client})
	got := bustest.NewCollector()
	if _, err := c.Subscribe(ctx, "secure/#", got.Handle, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, &bus.Message{Topic: "secure/t", Payload: []byte("over TLS"), QoS: bus.AtLeastOnce}); err != nil {
		t.Fatal(err)
	}
	if m := got.WaitCount(t, 1)[0]; string(m.Payload) != "over TLS" {
		t.Errorf("got %q", m.Payload)
	}

	anon, err := mqttbus.New(&mqttbus.Options{Brokers: []string{b.URL().String()}, TLSConfig: certs.ClientNoCert, QueueDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close(ctx)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := anon.AwaitConnection(wctx); err == nil {
		t.Error("a client without a certificate connected to a listener that requires one")
	}
}
