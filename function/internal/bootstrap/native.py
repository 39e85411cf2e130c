# edgekit native-protocol bootstrap for Python functions, standard library
# only: invocations on fd 3 (from the host), replies on fd 4, metrics and
# calls of the gateway on fd 5 (to the host), the calls' answers on fd 6,
# as package function/native documents. Handlers,
# context, results and errors as in bootstrap.py
# (edgekit_bootstrap_common.py).
import json
import os
import re
import struct
import sys
import threading
import time
import traceback

import edgekit_bootstrap_common as common


# fd 5 takes frames from any thread (metrics, calls): one at a time.
_telemetry = threading.Lock()


def write_frame(kind, body, fd=4):
    data = struct.pack("<I", len(body) + 1) + kind + body
    if fd == 5:
        _telemetry.acquire()
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
    finally:
        if fd == 5:
            _telemetry.release()


class _Calls:
    """The gateway API's transport: call frames on fd 5, their answers
    (result or error frames whose seq is the call's id) on fd 6, read by a
    thread started with the first call."""

    def __init__(self):
        self._lock = threading.Lock()
        self._next = 0
        self._pending = {}
        self._reader = None
        self._broken = None

    def _read(self):
        buf = b""
        header, seq = struct.Struct("<I"), struct.Struct("<Q")
        while True:
            try:
                chunk = os.read(6, 65536)
            except OSError as exc:
                chunk, why = b"", "the gateway's answers: %s" % exc
            else:
                why = "the gateway closed its answers"
            if not chunk:
                with self._lock:
                    self._broken = why
                    slots, self._pending = self._pending, {}
                for slot in slots.values():
                    slot[1] = (b"X", why.encode())
                    slot[0].set()
                return
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + header.unpack_from(buf)[0]:
                n = header.unpack_from(buf)[0]
                body, buf = buf[4:4 + n], buf[4 + n:]
                if n < 9:
                    continue
                with self._lock:
                    slot = self._pending.pop(seq.unpack_from(body, 1)[0], None)
                if slot:
                    slot[1] = (body[:1], body[9:])
                    slot[0].set()

    @staticmethod
    def _send(cid, method, args, payload, deadline):
        """Writes a call frame; id 0 wants no answer."""
        if deadline and time.time() * 1000 >= deadline:
            raise common.EdgekitError("Timeout", "%s: the invocation's deadline has passed" % method)
        m, a = method.encode(), json.dumps(args).encode()
        write_frame(b"C", struct.pack("<QqH", cid, int(deadline or 0), len(m)) + m + struct.pack("<I", len(a)) + a + payload, 5)

    def __call__(self, method, args, payload, deadline):
        E = common.EdgekitError
        slot = [threading.Event(), None]
        with self._lock:
            if self._broken:
                raise E("Unavailable", "%s: %s" % (method, self._broken))
            if self._reader is None:
                self._reader = threading.Thread(target=self._read, name="edgekit-answers", daemon=True)
                self._reader.start()
            self._next += 1
            cid = self._next
            self._pending[cid] = slot
        try:
            self._send(cid, method, args, payload, deadline)
        except Exception:
            with self._lock:
                self._pending.pop(cid, None)
            raise
        wait = None if not deadline else max(0.0, deadline / 1000 - time.time())
        if not slot[0].wait(wait):
            with self._lock:
                self._pending.pop(cid, None)
            raise E("Timeout", "%s: no answer by the deadline" % method)
        kind, body = slot[1]
        if kind == b"O":
            return body
        if kind == b"X":
            raise E("Unavailable", "%s: %s" % (method, body.decode()))
        try:
            e = json.loads(body)
        except ValueError:
            e = {"errorType": "Error", "errorMessage": body.decode("utf-8", "replace")}
        raise E(e.get("errorType") or "Error", e.get("errorMessage"), e.get("stackTrace"))

    def send(self, method, args, payload, deadline):
        """Makes a call that wants no answer (id 0): the gateway carries
        such calls out in order and keeps their refusals for the next
        flush call."""
        self._send(0, method, args, payload, deadline)


common.calls[0] = _Calls()
common.log_record[0] = lambda level, text: write_frame(b"L", bytes([level]) + str(text).encode(), 5)


def error_json(exc, type_name=None):
    return json.dumps(common.error_fields(exc, type_name)).encode()


def _metric(name, value):
    n = name.encode()
    write_frame(b"M", struct.pack("<H", len(n)) + n + struct.pack("<d", float(value)), 5)


_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _xray(tp):
    """The W3C trace context in the X-Ray form Lambda puts in
    _X_AMZN_TRACE_ID, or None."""
    m = _TRACEPARENT.match(tp or "")
    if not m:
        return None
    t = m.group(1)
    return "Root=1-%s-%s;Parent=%s;Sampled=%d" % (t[:8], t[8:], m.group(2), int(m.group(3), 16) & 1)


def _decode(meta):
    """The invocation's metadata (JSON: requestId, source, traceparent,
    tracestate) as the context reads it."""
    d = json.loads(meta or b"{}")
    source = d.get("source")
    return {"request_id": d.get("requestId"), "traceparent": d.get("traceparent"), "tracestate": d.get("tracestate"),
            "client_context": json.dumps({"custom": source}) if source else None}


common.Context.decode = staticmethod(_decode)
common.Context.metric = staticmethod(_metric)


# wrote[0] is set when the function writes to sys.stdout or sys.stderr
# (print, the logging handler): the reply then says so ('W'), and the host
# makes sure those lines are logged before the invocation's REPORT. Writes
# that bypass them (os.write, C extensions, child processes) are not
# counted; they are logged as they come.
wrote = [False]


class _Counted:
    """A text stream that notes that it was written to."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, s):
        wrote[0] = True
        return self._stream.write(s)

    def writelines(self, lines):
        wrote[0] = True
        return self._stream.writelines(lines)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def serve(handler, fd_in=3, fd_out=4):
    """Runs invocations until the host closes fd_in. The loop is written for
    CPython's speed: one read brings as many frames as are there, names are
    bound locally, and each reply is one write."""
    header = struct.Struct("<I")
    invoke = struct.Struct("<QqI")
    reply = struct.Struct("<IcQ")
    wrote_frame = struct.Struct("<IcQ")
    read, write = os.read, os.write
    loads, dumps = common.json_codec()
    fc = common.SERVICE == "fc"
    Context = common.Context
    current = common.current
    lam = common.SERVICE == "lambda"
    environ = os.environ
    traced = False
    buf = b""
    while True:
        while len(buf) < 4 or len(buf) < 4 + header.unpack_from(buf)[0]:
            chunk = read(fd_in, 65536)
            if not chunk:
                return  # the host closed the pipe
            buf += chunk
        n = header.unpack_from(buf)[0]
        body, buf = buf[4:4 + n], buf[4 + n:]
        if body[:1] == b"K":  # the configuration changed, between invocations
            text = body[1:].decode()
            environ["EDGEKIT_FUNCTION_CONFIG"] = "" if text == "null" else text  # what later invocations read
            common.config_changed(json.loads(text or "null"))
            continue
        if body[:1] != b"V":
            continue
        seq, deadline, m = invoke.unpack_from(body, 1)
        meta, payload = body[21:21 + m], body[21 + m:]
        context = Context(None, deadline, meta)
        current[0] = context
        if lam and (traced or b'"traceparent"' in meta):
            # _X_AMZN_TRACE_ID is the invocation's, or absent.
            x = _xray(context.traceparent)
            if x:
                environ["_X_AMZN_TRACE_ID"] = x
            else:
                environ.pop("_X_AMZN_TRACE_ID", None)
            traced = x is not None
        try:
            if common.is_driver_op(meta):
                out = dumps(common.serve_driver_op(payload))
            else:
                if fc:
                    event = payload
                else:
                    try:
                        event = loads(payload)
                    except ValueError:
                        event = payload.decode("utf-8", "replace")
                out = dumps(handler(event, context))
            kind = b"O"
        except Exception as exc:
            out, kind = error_json(exc), b"E"
        current[0] = None
        data = reply.pack(len(out) + 9, kind, seq) + out
        if wrote[0]:
            wrote[0] = False
            data = wrote_frame.pack(9, b"W", seq) + data
        while data:
            data = data[write(fd_out, data):]


# A module that is still importing after LOOP_GRACE seconds is taken for
# one that loops at import, as Link IoT Edge's examples do (a publishing
# loop before the handler is defined): the invocations are served from
# another thread meanwhile, each waiting for the handler to be defined.
LOOP_GRACE = 2.0


def _stop(code):
    """Stops the process now, not when the function's own threads end (a
    driver's reporting loop never does)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _early_handler():
    """The handler of a module still importing: each invocation waits, up
    to its deadline, for the module to define it."""
    spec = os.environ.get("_HANDLER") or os.environ.get("FC_FUNCTION_HANDLER", "")
    modname, _, name = spec.rpartition(".")
    modname = modname.replace("/", ".")

    def handler(event, context):
        while True:
            fn = getattr(sys.modules.get(modname), name, None)
            if callable(fn):
                return fn(event, context)
            if context.get_remaining_time_in_millis() <= 10:
                raise common.RuntimeError_("Runtime.HandlerNotFound", "Handler '%s' is not defined yet: module '%s' is still running its top level" % (name, modname))
            time.sleep(0.01)
    return handler


def main():
    sys.stdout, sys.stderr = _Counted(sys.stdout), _Counted(sys.stderr)
    common.install_logging()
    lock = threading.Lock()
    state = ["loading"]

    def serve_early():
        with lock:
            if state[0] != "loading":
                return
            state[0] = "serving"
        common.serving[0] = threading.current_thread()
        write_frame(b"R", b"counts-output")
        serve(_early_handler())
        _stop(0)

    early = threading.Timer(LOOP_GRACE, serve_early)
    early.daemon = True
    early.start()
    try:
        handler = common.load_handler()
    except Exception as exc:
        with lock:
            serving, state[0] = state[0] == "serving", "failed"
        early.cancel()
        if serving:  # the module's top level failed after the invocations began
            traceback.print_exc()
            _stop(1)
        write_frame(b"I", error_json(exc))
        sys.exit(1)
    with lock:
        serving, state[0] = state[0] == "serving", "loaded"
    early.cancel()
    if serving:  # the module finished importing while served: serve on
        early.join()
        _stop(0)
    wrote[0] = False  # what loading printed is not an invocation's
    write_frame(b"R", b"counts-output")
    serve(handler)
    _stop(0)


if __name__ == "__main__":
    main()
