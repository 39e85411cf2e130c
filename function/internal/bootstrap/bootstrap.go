// Package bootstrap holds the runtime loops the function host runs for
// Node.js and Python functions: bootstrap.js and bootstrap.py speak the
// Lambda Runtime API with the language's standard library only, so a
// handler written for Lambda runs unchanged. The host writes them into its
// data directory and starts `node bootstrap.js` or `python3 -u
// bootstrap.py` in the function's code directory.
package bootstrap

import _ "embed"

// Node is bootstrap.js.
//
//go:embed bootstrap.js
var Node string

// Python is bootstrap.py.
//
//go:embed bootstrap.py
var Python string
