// Package bootstrap holds the runtime loops the function host runs for
// Node.js and Python functions, standard library only: bootstrap.js and
// bootstrap.py speak the Lambda Runtime API (a handler written for Lambda
// runs unchanged); native.js and native.py speak edgekit's framed protocol
// over pipes (package function/native), with the same handler signatures.
// The host writes them into its data directory and starts them in the
// function's code directory.
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

// NodeNative is native.js.
//
//go:embed native.js
var NodeNative string

// PythonNative is native.py.
//
//go:embed native.py
var PythonNative string

// NodeCommon is edgekit_common.js, which both Node.js bootstraps load.
//
//go:embed edgekit_common.js
var NodeCommon string

// PythonCommon is edgekit_bootstrap_common.py, which both Python
// bootstraps import.
//
//go:embed edgekit_bootstrap_common.py
var PythonCommon string

// NodeAPI is edgekit.js, the gateway API for Node.js functions; the host
// writes it as node_modules/edgekit/index.js beside the bootstraps.
//
//go:embed edgekit.js
var NodeAPI string

// PythonAPI is edgekit.py, the gateway API for Python functions, beside
// the bootstraps (the directory of the script Python runs is on sys.path).
//
//go:embed edgekit.py
var PythonAPI string

// NodeLinkEdge is linkedge_core_sdk.js, Link IoT Edge's core SDK for
// Node.js on the gateway API; the host writes it as
// node_modules/linkedge-core-sdk/index.js.
//
//go:embed linkedge_core_sdk.js
var NodeLinkEdge string

// PythonLinkEdge is lecoresdk.py, Link IoT Edge's core SDK for Python on
// the gateway API, beside the bootstraps.
//
//go:embed lecoresdk.py
var PythonLinkEdge string

// NodeThingAccess is linkedge_thing_access_sdk.js, Link IoT Edge's thing
// access SDK for Node.js drivers on the driver API; the host writes it as
// node_modules/linkedge-thing-access-sdk/index.js.
//
//go:embed linkedge_thing_access_sdk.js
var NodeThingAccess string

// PythonThingAccess is lethingaccesssdk.py, Link IoT Edge's thing access
// SDK for Python drivers on the driver API, beside the bootstraps.
//
//go:embed lethingaccesssdk.py
var PythonThingAccess string
