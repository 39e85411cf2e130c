// Command console is the fleet's console: it serves a fleet (console
// serve: the fleet on an MQTT broker, its store, its HTTP API, the
// artifact server and the web console at /ui/ on one listener), and it is
// the operator's client of that API — apps, versions (packed from a
// function directory, signed, uploaded), configuration, groups,
// instances, deployments and their rollouts, the web console's users and
// the audit log — and of one gateway's local API (logs, invoke).
//
// The web console takes the API token (an operator) or a user's name and
// password; users are made with
//
//	echo 'a long password' | console user set ana -role operator
//
//	console serve -broker mqtt://127.0.0.1:1883 -store bolt:fleet.db -listen 127.0.0.1:7700 -data ./fleet
//	console app create alarm -kind function
//	console version add alarm 1.0 -dir ./alarm -sign key.hex
//	console deploy alarm-1 -selector site=plant-1 -waves 1,100% alarm=1.0
//	console rollout status alarm-1
//
// The client commands take -url (default $EDGEKIT_FLEET_URL or
// http://127.0.0.1:7700) and -token-file (default $EDGEKIT_FLEET_TOKEN_FILE
// or fleet/api-token) and print JSON.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "console:", err)
		os.Exit(1)
	}
}
