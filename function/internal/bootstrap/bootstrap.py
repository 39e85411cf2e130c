# edgekit bootstrap for Python functions: the Lambda Runtime API loop,
# standard library only. The host runs `python3 -u bootstrap.py` with
# LAMBDA_TASK_ROOT (the code directory) and _HANDLER ("module.function");
# handlers are `def handler(event, context)`.
import http.client
import json
import os
import sys
import time

from edgekit_bootstrap_common import error_fields, load_handler

# The address is host:port, optionally followed by a path prefix (the
# instance's secret on edgekit): host:port/prefix.
HOST_PORT, SLASH, PREFIX = os.environ["AWS_LAMBDA_RUNTIME_API"].partition("/")
BASE = SLASH + PREFIX + "/2018-06-01/runtime"
conn = http.client.HTTPConnection(HOST_PORT)


def request(method, path, body=None, headers=None):
    conn.request(method, BASE + path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def error_body(exc, type_name=None):
    return json.dumps(error_fields(exc, type_name))


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        try:
            self.client_context = json.loads(headers.get("Lambda-Runtime-Client-Context") or "null")
        except ValueError:
            self.client_context = None
        self._deadline = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)

    def get_remaining_time_in_millis(self):
        return self._deadline - int(time.time() * 1000)


def main():
    try:
        handler = load_handler()
    except Exception as exc:
        request("POST", "/init/error", error_body(exc, "Runtime.ImportModuleError"),
                {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})
        sys.exit(1)
    while True:
        status, headers, body = request("GET", "/invocation/next")
        if status != 200:
            print("runtime API /next answered %d: %s" % (status, body), file=sys.stderr)
            sys.exit(1)
        rid = headers.get("Lambda-Runtime-Aws-Request-Id")
        try:
            event = json.loads(body)
        except ValueError:
            event = body.decode("utf-8", "replace")
        try:
            result = handler(event, Context(headers))
            status, _, answer = request("POST", "/invocation/%s/response" % rid, json.dumps(result),
                                        {"Content-Type": "application/json"})
        except Exception as exc:
            status, _, answer = request("POST", "/invocation/%s/error" % rid, error_body(exc),
                                        {"Lambda-Runtime-Function-Error-Type": type(exc).__name__})
        if status != 202:
            print("runtime API refused the result (%d): %s" % (status, answer), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
