# edgekit native-protocol bootstrap for Python functions, standard library
# only: invocations on fd 3 (from the host), replies on fd 4 and metrics on
# fd 5 (to the host), as package function/native documents. Handlers are
# `def handler(event, context)`.
import json
import os
import struct
import sys
import time

from edgekit_bootstrap_common import error_fields, json_codec, load_handler


def write_frame(kind, body, fd=4):
    data = struct.pack("<I", len(body) + 1) + kind + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


def error_json(exc, type_name=None):
    return json.dumps(error_fields(exc, type_name)).encode()


class Context:
    """The Lambda context object. The metadata is decoded on first use:
    many handlers never look."""

    def __init__(self, meta, deadline):
        self._meta = meta
        self._decoded = None
        self._deadline = deadline

    def _field(self, name):
        if self._decoded is None:
            self._decoded = json.loads(self._meta or b"{}")
        return self._decoded.get(name)

    @property
    def aws_request_id(self):
        return self._field("requestId")

    @property
    def function_name(self):
        return self._field("function")

    @property
    def function_version(self):
        return self._field("version")

    @property
    def client_context(self):
        source = self._field("source")
        return {"custom": source} if source else None

    @property
    def traceparent(self):
        """The W3C trace context of the invocation's cause, or None."""
        return self._field("traceparent")

    @property
    def tracestate(self):
        return self._field("tracestate")

    def get_remaining_time_in_millis(self):
        return self._deadline - int(time.time() * 1000)

    def metric(self, name, value):
        n = name.encode()
        write_frame(b"M", struct.pack("<H", len(n)) + n + struct.pack("<d", float(value)), 5)


def serve(handler, fd_in=3, fd_out=4):
    """Runs invocations until the host closes fd_in. The loop is written for
    CPython's speed: one read brings as many frames as are there, names are
    bound locally, and each reply is one write."""
    header = struct.Struct("<I")
    invoke = struct.Struct("<QqI")
    reply = struct.Struct("<IcQ")
    read, write = os.read, os.write
    loads, dumps = json_codec()
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
        payload = body[21 + m:]
        try:
            event = loads(payload)
        except ValueError:
            event = payload.decode("utf-8", "replace")
        try:
            out = dumps(handler(event, Context(body[21:21 + m], deadline))).encode()
            kind = b"O"
        except Exception as exc:
            out, kind = error_json(exc), b"E"
        data = reply.pack(len(out) + 9, kind, seq) + out
        while data:
            data = data[write(fd_out, data):]


def main():
    try:
        handler = load_handler()
    except Exception as exc:
        write_frame(b"I", error_json(exc, "Runtime.ImportModuleError"))
        sys.exit(1)
    write_frame(b"R", b"")
    serve(handler)


if __name__ == "__main__":
    main()
