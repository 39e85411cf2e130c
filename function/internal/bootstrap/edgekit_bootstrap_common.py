# What the runtime-API and native Python bootstraps share: loading the
# handler named by _HANDLER (module.function or path/to/module.function),
# the context object of the function's service (Lambda's or Function
# Compute's, EDGEKIT_SERVICE), the root logging handler, and the shapes of
# results, events and errors as that service's Python runtime has them.
# Standard library only.
import decimal
import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback

SERVICE = "fc" if os.environ.get("EDGEKIT_SERVICE") == "fc" else "lambda"
_ENV = os.environ
_HERE = os.path.dirname(os.path.abspath(__file__))

if SERVICE == "lambda":
    # What Lambda's managed runtime says of itself.
    os.environ["AWS_EXECUTION_ENV"] = "AWS_Lambda_python%d.%d" % sys.version_info[:2]


class RuntimeError_(Exception):
    """An error the runtime raises itself, with Lambda's type name."""

    def __init__(self, type_name, message):
        super().__init__(message)
        self.type_name = type_name


def load_handler():
    """Loads the handler as Lambda's Python runtime does: "pkg/mod.fn" and
    "pkg.mod.fn" are fn of module pkg.mod, found from the code root."""
    spec = _ENV.get("_HANDLER") or _ENV.get("FC_FUNCTION_HANDLER", "")
    module, _, name = spec.rpartition(".")
    if not module or not name:
        raise RuntimeError_("Runtime.MalformedHandlerName", "Bad handler '%s': not enough values to unpack (expected 2, got 1)" % spec)
    root = _ENV.get("LAMBDA_TASK_ROOT") or _ENV.get("FC_FUNC_CODE_PATH") or os.getcwd()
    sys.path.insert(0, root)
    modname = module.replace("/", ".")
    try:
        m = importlib.import_module(modname)
    except ImportError as exc:
        raise RuntimeError_("Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, exc)) from exc
    except SyntaxError as exc:
        raise RuntimeError_("Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, exc)) from exc
    fn = getattr(m, name, None)
    if not callable(fn):
        raise RuntimeError_("Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (name, modname))
    return fn


def _user_frames(tb):
    """The traceback without the bootstrap's own frames, as Lambda's."""
    frames = traceback.extract_tb(tb)
    while frames and os.path.dirname(os.path.abspath(frames[0].filename)) == _HERE:
        frames = frames[1:]
    return traceback.format_list(frames)


def error_fields(exc, type_name=None):
    """An exception as the service reports it: errorMessage, errorType and
    stackTrace, a list of formatted frames."""
    return {
        "errorMessage": exc.message if isinstance(exc, EdgekitError) else str(exc),
        "errorType": type_name or getattr(exc, "type_name", None) or type(exc).__name__,
        "stackTrace": _user_frames(exc.__traceback__),
    }


def _default(o):
    # As Lambda's runtime: a Decimal (what DynamoDB reads return) is a
    # number; anything else json cannot hold is a marshal error.
    if isinstance(o, decimal.Decimal):
        return float(o)
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def _make_encoder():
    """The JSON encoder of results, made once: CPython's C encoder called
    directly where there is one (it saves ~2 µs an invocation over the json
    module's Python-level wrappers), without the circular-reference check —
    a cycle ends in RecursionError —, else json's own."""
    import json.encoder
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=_default).encode
    encode = make(None, _default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda value: join(encode(value, 0))


_encode = _make_encoder()


def to_json(value):
    """value as Lambda's runtime serialises a result: bytes as they are,
    anything else JSON; what JSON cannot hold raises Runtime.MarshalError."""
    try:
        return _encode(value).encode()
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        if isinstance(exc, RecursionError):
            exc = ValueError("Circular reference detected")
        raise RuntimeError_("Runtime.MarshalError", "Unable to marshal response: %s" % exc) from None


def encode_result(value):
    """The handler's result as the service returns it, and its content
    type: bytes as they are (both services); FC's str as its UTF-8;
    anything else JSON (to_json)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), "application/unknown" if SERVICE == "lambda" else "application/octet-stream"
    if SERVICE == "fc" and isinstance(value, str):
        return value.encode(), "text/plain; charset=utf-8"
    return to_json(value), "application/json"


def decode_event(data, loads=json.loads):
    """The event as the service hands it over: Lambda parses JSON (a
    payload that is not JSON stays a string); FC gives the bytes."""
    if SERVICE == "fc":
        return bytes(data)
    try:
        return loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


class _Object:
    """A context member read from JSON: its fields as attributes."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.__dict__)


class Client(_Object):
    """The mobile client of Lambda's client context."""


class ClientContext(_Object):
    """Lambda's client_context: client, custom, env."""


class CognitoIdentity(_Object):
    """Lambda's identity: cognito_identity_id, cognito_identity_pool_id."""


def client_context(raw):
    """Lambda's ClientContext from its JSON, or None."""
    if not raw:
        return None
    try:
        d = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    c = d.get("client")
    client = None
    if isinstance(c, dict):
        client = Client(installation_id=c.get("installation_id"), app_title=c.get("app_title"),
                        app_version_name=c.get("app_version_name"), app_version_code=c.get("app_version_code"),
                        app_package_name=c.get("app_package_name"))
    return ClientContext(client=client, custom=d.get("custom"), env=d.get("env"))


def cognito_identity(raw):
    d = {}
    if raw:
        try:
            d = json.loads(raw) or {}
        except ValueError:
            d = {}
    return CognitoIdentity(cognito_identity_id=d.get("cognitoIdentityId"), cognito_identity_pool_id=d.get("cognitoIdentityPoolId"))


def _no_fields(raw):
    return {}


class LambdaContext:
    """Lambda's context object. What comes with the invocation is decoded
    from raw on first use (most handlers never look) by the class's
    decode, which each bootstrap sets: request_id, arn, client_context and
    identity (JSON)."""

    decode = staticmethod(_no_fields)

    function_name = _ENV.get("AWS_LAMBDA_FUNCTION_NAME")
    function_version = _ENV.get("AWS_LAMBDA_FUNCTION_VERSION")
    memory_limit_in_mb = _ENV.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    log_group_name = _ENV.get("AWS_LAMBDA_LOG_GROUP_NAME")
    log_stream_name = _ENV.get("AWS_LAMBDA_LOG_STREAM_NAME")

    def __init__(self, request_id, deadline_ms, raw):
        self._rid = request_id
        self._deadline = deadline_ms
        self._raw = raw
        self._decoded = None

    def _field(self, name):
        if self._decoded is None:
            self._decoded = self.decode(self._raw)
        return self._decoded.get(name)

    @property
    def aws_request_id(self):
        if self._rid is None:
            self._rid = self._field("request_id")
        return self._rid

    @property
    def invoked_function_arn(self):
        return self._field("arn") or _ENV.get("EDGEKIT_FUNCTION_ARN")

    @property
    def client_context(self):
        return client_context(self._field("client_context"))

    @property
    def identity(self):
        return cognito_identity(self._field("identity"))

    @property
    def traceparent(self):
        """The W3C trace context of the invocation's cause, or None."""
        return self._field("traceparent")

    @property
    def tracestate(self):
        return self._field("tracestate")

    def get_remaining_time_in_millis(self):
        return self._deadline - int(time.time() * 1000)


class Credentials(_Object):
    """FC's credentials: access_key_id, access_key_secret, security_token."""


class FunctionMeta(_Object):
    """FC's function: name, handler, memory, timeout, initializer,
    initialization_timeout."""


class ServiceMeta(_Object):
    """FC's service: name, log_project, log_store, qualifier, version_id."""


class FCContext:
    """Function Compute's context object. The class's decode returns from
    raw the invocation's request_id, and its FC headers (lower-case) where
    the runtime API brought them; the environment has the rest. The
    credentials are empty: the edge has no STS."""

    decode = staticmethod(_no_fields)

    region = _ENV.get("FC_REGION")
    account_id = _ENV.get("FC_ACCOUNT_ID")
    retry_count = 0

    def __init__(self, request_id, deadline_ms, raw):
        self._rid = request_id
        self._deadline = deadline_ms
        self._raw = raw
        self._decoded = None

    def _h(self, name, env=None):
        if self._decoded is None:
            self._decoded = self.decode(self._raw)
        v = (self._decoded.get("headers") or {}).get(name)
        return v if v is not None else (_ENV.get(env) if env else None)

    @property
    def request_id(self):
        if self._rid is None:
            if self._decoded is None:
                self._decoded = self.decode(self._raw)
            self._rid = self._decoded.get("request_id")
        return self._rid

    @property
    def credentials(self):
        return Credentials(access_key_id=self._h("x-fc-access-key-id") or "",
                           access_key_secret=self._h("x-fc-access-key-secret") or "",
                           security_token=self._h("x-fc-security-token") or "")

    @property
    def function(self):
        def num(v):
            return int(v) if v not in (None, "") else None
        return FunctionMeta(name=self._h("x-fc-function-name", "FC_FUNCTION_NAME"),
                            handler=self._h("x-fc-function-handler", "FC_FUNCTION_HANDLER"),
                            memory=num(self._h("x-fc-function-memory", "FC_FUNCTION_MEMORY_SIZE")),
                            timeout=num(self._h("x-fc-function-timeout", "EDGEKIT_FUNCTION_TIMEOUT")),
                            initializer=None, initialization_timeout=None)

    @property
    def service(self):
        return ServiceMeta(name=self._h("x-fc-service-name", "FC_SERVICE_NAME"), log_project="", log_store="",
                           qualifier=self._h("x-fc-qualifier", "FC_QUALIFIER"), version_id=_ENV.get("FC_FUNCTION_VERSION"))

    def get_remaining_time_in_millis(self):
        return self._deadline - int(time.time() * 1000)


Context = FCContext if SERVICE == "fc" else LambdaContext

# The context of the invocation under way, for the log records.
current = [None]
# serving[0] is the thread that runs invocations: the main thread, or the
# one native.py serves from while the main thread is still importing a
# module that loops at import.
serving = [threading.main_thread()]

# The gateway API's transport (the edgekit module; package function/fnapi
# names the methods): calls[0](method, args, payload, deadline_ms) returns
# the answer's bytes or raises EdgekitError. None where the bootstrap has
# none.
calls = [None]


def _print_record(level, text):
    print(text, file=sys.stderr if level >= 2 else sys.stdout)


# log_record[0](level, text) sends a record at level (0 debug, 1 info, 2
# warn, 3 error) to the host; the native bootstrap sets a log frame's.
# Here it is a line on stdout, or stderr from warn up.
log_record = [_print_record]


def http_calls(base, token):
    """The gateway API's transport over the gateway's local API (POST
    {base}/v1/calls/{method}, the function's own bearer token), for the
    runtime-API bootstrap; answers and errors as the native transport's.
    Each thread keeps a connection of its own."""
    import base64
    import http.client
    import threading
    from urllib.parse import quote, urlsplit

    url = urlsplit(base)
    prefix = url.path.rstrip("/")
    local = threading.local()

    def call(method, args, payload, deadline):
        now = time.time()
        if deadline and now * 1000 >= deadline:
            raise EdgekitError("Timeout", "%s: the invocation's deadline has passed" % method)
        timeout = (deadline / 1000 - now) if deadline else None
        body = json.dumps({"args": args, "payload": base64.b64encode(payload).decode()})
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
        if deadline:
            headers["Edgekit-Deadline-Ms"] = str(int(deadline))
        for attempt in (0, 1):  # once more on a kept connection the server closed
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(url.hostname, url.port)
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request("POST", "%s/v1/calls/%s" % (prefix, quote(method)), body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except TimeoutError:
                conn.close()
                local.conn = None
                raise EdgekitError("Timeout", "%s: no answer by the deadline" % method)
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                local.conn = None
                if attempt:
                    raise EdgekitError("Unavailable", "%s: the local API: %s" % (method, exc))
        if resp.status == 200:
            return data
        try:
            e = json.loads(data)
        except ValueError:
            e = {}
        raise EdgekitError(e.get("errorType") or e.get("error_type") or "Error",
                           e.get("errorMessage") or e.get("error") or "%s: HTTP %d" % (method, resp.status), e.get("stackTrace"))

    return call


# Called, in turn, with the function's configuration each time a
# deployment changes it while the instance runs (native protocol: the
# instance is not restarted for it).
config_listeners = []


# driver[0] serves the gateway's driver ops (package fnapi's DriverOp) once
# the program has registered a driver (edgekit.driver).
driver = [None]


def is_driver_op(meta):
    """Whether an invocation's metadata (JSON) names the gateway's driver
    as its source (source type "edgekit-driver", set only by the
    gateway)."""
    if b"edgekit-driver" not in meta:
        return False
    source = json.loads(meta).get("source") or {}
    return source.get("type") == "edgekit-driver"


def serve_driver_op(payload):
    if driver[0] is None:
        raise EdgekitError("Unavailable", "the gateway asked a driver, and the program registered none (edgekit.driver)")
    return driver[0](json.loads(payload))


def config_changed(cfg):
    for f in list(config_listeners):
        try:
            f(cfg)
        except Exception:
            traceback.print_exc()


class EdgekitError(Exception):
    """A call the gateway refused or that failed: type says why
    (Forbidden, BadRequest, Timeout, Unavailable, TooManyCalls,
    UnknownDevice, InvalidValue, ..., or an invoked function's own error
    type), message names what."""

    def __init__(self, type_, message, stack_trace=None):
        super().__init__("%s: %s" % (type_, message))
        self.type = type_
        self.type_name = type_  # what an invocation that raises it reports
        self.message = message
        self.stack_trace = stack_trace or []


def _request_id():
    c = current[0]
    if c is None:
        return ""
    return (c.request_id if SERVICE == "fc" else c.aws_request_id) or ""


class _Handler(logging.StreamHandler):
    """The root handler the service's runtime installs: each record is one
    line on stdout with its level, time and request id (a message's line
    breaks become carriage returns, as Lambda's)."""

    def emit(self, record):
        try:
            msg = self.format(record).replace("\n", "\r")
            t = time.gmtime(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % record.msecs
            rid = _request_id()
            if SERVICE == "fc":
                line = "%s %s [%s] %s\n" % (stamp, rid, record.levelname, msg)
            else:
                line = "[%s]\t%s\t%s\t%s\n" % (record.levelname, stamp, rid, msg)
            self.stream.write(line)
            self.flush()
        except Exception:
            self.handleError(record)


def install_logging():
    """Installs the root handler; AWS_LAMBDA_LOG_LEVEL sets the root level
    where Lambda reads it."""
    root = logging.getLogger()
    root.addHandler(_Handler(sys.stdout))
    level = _ENV.get("AWS_LAMBDA_LOG_LEVEL", "").upper()
    if SERVICE == "lambda" and level in ("DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"):
        root.setLevel("WARNING" if level == "WARN" else level)


def json_codec():
    """Returns (loads, dumps) for the native loop's event and result: loads
    is json.loads through CPython's C scanner where it can be called
    directly, dumps the result's bytes as encode_result gives them."""
    import json.decoder

    scan_once = json.decoder.JSONDecoder().scan_once
    blank = " \t\n\r"

    def loads(data):
        try:
            s = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
            if s and s[0] not in blank:
                value, end = scan_once(s, 0)
                if end == len(s) or not s[end:].strip(blank):
                    return value
        except (UnicodeDecodeError, StopIteration, ValueError):
            pass
        return json.loads(data)  # the slow path, and its error

    if SERVICE == "fc":
        return loads, lambda value: encode_result(value)[0]
    return loads, to_json
