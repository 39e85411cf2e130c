// Package function is the function host: edge functions that run on the
// gateway on demand (started by the first event, stopped when idle) or
// continuously (kept alive and restarted with backoff). It is for gateway
// firmware that deploys and invokes functions, and for function authors who
// write in-process Go handlers.
//
// Out-of-process code in any language is served through the AWS Lambda and
// Alibaba Function Compute runtime APIs, so a function written for the cloud
// runs at the edge unchanged. The host's design is in docs/ARCHITECTURE.md;
// it speaks to the rest of the gateway only through package edge/bus.
package function
