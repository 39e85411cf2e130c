# edgekit native-protocol bootstrap for Python functions, standard library
# only: invocations on fd 3 (from the host), replies on fd 4 and metrics on
# fd 5 (to the host), as package function/native documents. Handlers,
# context, results and errors as in bootstrap.py
# (edgekit_bootstrap_common.py).
import json
import os
import re
import struct
import sys

import edgekit_bootstrap_common as common


def write_frame(kind, body, fd=4):
    data = struct.pack("<I", len(body) + 1) + kind + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


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


def main():
    sys.stdout, sys.stderr = _Counted(sys.stdout), _Counted(sys.stderr)
    common.install_logging()
    try:
        handler = common.load_handler()
    except Exception as exc:
        write_frame(b"I", error_json(exc))
        sys.exit(1)
    wrote[0] = False  # what loading printed is not an invocation's
    write_frame(b"R", b"counts-output")
    serve(handler)


if __name__ == "__main__":
    main()
