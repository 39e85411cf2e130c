package broker_test

import (
	"context"
	"fmt"
	"log"

	"github.com/edgekit/edgekit/edge/broker"
)

// Run the gateway's local broker: anonymous on loopback, a user for LAN
// devices on the gateway's LAN address, each device allowed only its own
// topics. (Not run: it needs mosquitto and binds a LAN port.)
func Example() {
	ctx := context.Background()
	b, err := broker.New(&broker.Options{
		DataDir: "/var/lib/gateway/broker",
		Listeners: []broker.Listener{
			{Address: "127.0.0.1:1883"},
			{Address: "192.0.2.10:8883", TLS: &broker.TLS{CertFile: "/etc/gateway/tls.crt", KeyFile: "/etc/gateway/tls.key"}},
		},
		Users:             []broker.User{{Name: "plc-7", Password: "from-provisioning"}},
		AnonymousLoopback: true,
		ACL: []broker.ACLRule{
			{Pattern: true, Access: broker.ReadWrite, Topic: "devices/%u/#"},
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		log.Fatal(err)
	}
	defer b.Close(ctx)
	fmt.Println(b.URL(), b.Status().State)
}
