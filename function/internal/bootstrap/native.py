# edgekit native-protocol bootstrap for Python functions, standard library
# only: invocations on fd 3 (from the host), replies on fd 4 and metrics on
# fd 5 (to the host), as package function/native documents. Handlers are
# `def handler(event, context)`.
import json
import os
import struct
import sys
import time

from edgekit_bootstrap_common import error_fields, load_handler


def write_frame(kind, body, fd=4):
    data = struct.pack("<I", len(body) + 1) + kind + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


class Frames:
    """Reads frames from fd 3, as many as one read brings at a time."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()

    def next(self):
        buf = self.buf
        while True:
            if len(buf) >= 4:
                (n,) = struct.unpack_from("<I", buf, 0)
                if len(buf) >= 4 + n:
                    body = bytes(buf[4:4 + n])
                    del buf[:4 + n]
                    return body
            chunk = os.read(self.fd, 65536)
            if not chunk:
                sys.exit(0)  # the host closed the pipe
            buf += chunk


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

    def get_remaining_time_in_millis(self):
        return self._deadline - int(time.time() * 1000)

    def metric(self, name, value):
        n = name.encode()
        write_frame(b"M", struct.pack("<H", len(n)) + n + struct.pack("<d", float(value)), 5)


def main():
    try:
        handler = load_handler()
    except Exception as exc:
        write_frame(b"I", error_json(exc, "Runtime.ImportModuleError"))
        sys.exit(1)
    write_frame(b"R", b"")
    frames = Frames(3)
    while True:
        body = frames.next()
        if body[:1] != b"V":
            continue
        seq, deadline, m = struct.unpack_from("<QqI", body, 1)
        payload = body[21 + m:]
        try:
            event = json.loads(payload)
        except ValueError:
            event = payload.decode("utf-8", "replace")
        try:
            result = handler(event, Context(body[21:21 + m], deadline))
            write_frame(b"O", struct.pack("<Q", seq) + json.dumps(result).encode())
        except Exception as exc:
            write_frame(b"E", struct.pack("<Q", seq) + error_json(exc))


if __name__ == "__main__":
    main()
