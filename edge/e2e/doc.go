// Package e2e holds the gateway's end-to-end test: a real Mosquitto as the
// upstream broker, a private podman service, an aws-lambda-go package
// served over HTTP, a Node.js function on a message trigger and a container
// app. It is a module of its own because it needs the podman backend
// (container/podman), whose dependency tree the main module must not
// carry. Build and test it with the podman tags:
//
//	go test -tags remote,containers_image_openpgp,exclude_graphdriver_btrfs ./...
package e2e
