// Package podman is the container.Runtime backend on a podman service
// (rootful or rootless), through the podman/v5 bindings.
//
// It is its own Go module, so that importing edgekit does not bring
// podman's dependency tree along. Build it with the tags the bindings
// need:
//
//	go build -tags remote,containers_image_openpgp,exclude_graphdriver_btrfs
package podman
