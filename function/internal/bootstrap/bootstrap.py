# edgekit bootstrap for Python functions: the runtime API loop of the
# function's service — Lambda's (AWS_LAMBDA_RUNTIME_API, 2018-06-01) or
# Function Compute's (FC_RUNTIME_API, 2020-11-11) — standard library only.
# The host runs `python3 -u bootstrap.py` in the code directory with
# _HANDLER ("module.function"); handlers are `def handler(event, context)`.
import http.client
import json
import os
import sys

import edgekit_bootstrap_common as common

FC = common.SERVICE == "fc"
if FC:
    ADDR, PREFIX, OK = os.environ["FC_RUNTIME_API"], "/2020-11-11/runtime", 200
    ID, DEADLINE = "x-fc-request-id", "x-fc-function-deadline"
else:
    ADDR, PREFIX, OK = os.environ["AWS_LAMBDA_RUNTIME_API"], "/2018-06-01/runtime", 202
    ID, DEADLINE = "Lambda-Runtime-Aws-Request-Id", "Lambda-Runtime-Deadline-Ms"

# The address is host:port, optionally followed by a path prefix (the
# instance's secret on edgekit): host:port/prefix.
HOST_PORT, SLASH, SECRET = ADDR.partition("/")
BASE = SLASH + SECRET + PREFIX
conn = http.client.HTTPConnection(HOST_PORT)


def request(method, path, body=None, headers=None):
    conn.request(method, BASE + path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def post_error(path, exc, type_name=None):
    fields = common.error_fields(exc, type_name)
    return request("POST", path, json.dumps(fields),
                   {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": fields["errorType"]})


def decode(headers):
    """What the context reads from an invocation's headers."""
    if FC:
        return {"headers": {k.lower(): v for k, v in headers.items()}}
    return {"arn": headers.get("Lambda-Runtime-Invoked-Function-Arn"),
            "client_context": headers.get("Lambda-Runtime-Client-Context"),
            "identity": headers.get("Lambda-Runtime-Cognito-Identity")}


common.Context.decode = staticmethod(decode)

# The gateway API over the local API (the gateway gives each function its
# address and a token of its own).
if os.environ.get("EDGEKIT_API") and os.environ.get("EDGEKIT_API_TOKEN"):
    common.calls[0] = common.http_calls(os.environ["EDGEKIT_API"], os.environ["EDGEKIT_API_TOKEN"])


def main():
    common.install_logging()
    try:
        handler = common.load_handler()
    except Exception as exc:
        print("init error: %s" % exc, file=sys.stderr)
        if not FC:
            post_error("/init/error", exc)
        sys.exit(1)
    while True:
        status, headers, body = request("GET", "/invocation/next")
        if status != 200:
            print("runtime API /next answered %d: %s" % (status, body), file=sys.stderr)
            sys.exit(1)
        rid = headers.get(ID)
        if not FC:
            trace = headers.get("Lambda-Runtime-Trace-Id")
            if trace:
                os.environ["_X_AMZN_TRACE_ID"] = trace
            else:
                os.environ.pop("_X_AMZN_TRACE_ID", None)
        context = common.Context(rid, int(headers.get(DEADLINE) or 0), headers)
        common.current[0] = context
        try:
            out, ctype = common.encode_result(handler(common.decode_event(body), context))
            status, _, answer = request("POST", "/invocation/%s/response" % rid, out, {"Content-Type": ctype})
        except Exception as exc:
            status, _, answer = post_error("/invocation/%s/error" % rid, exc)
        common.current[0] = None
        if status != OK:
            print("runtime API refused the result (%d): %s" % (status, answer), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
