// Package container manages container applications on the gateway: desired
// state per application, keep-alive with backoff, health probes, upgrade with
// rollback and adoption of running containers after a gateway restart. It is
// for gateway firmware; engines plug in behind a small Runtime interface, and
// the podman backend lives in the nested module container/podman so that
// importers of other packages do not download podman's dependency tree.
package container
