# edgekit native-protocol bootstrap for Python functions, standard library
# only: frames on fd 3 (from the host) and fd 4 (to the host), as package
# function/native documents. Handlers are `def handler(event, context)`.
import json
import os
import struct
import sys
import time

from edgekit_bootstrap_common import error_fields, load_handler


def write_frame(kind, body):
    data = struct.pack("<I", len(body) + 1) + kind + body
    while data:
        n = os.write(4, data)
        data = data[n:]


def read_exact(n):
    chunks = []
    while n > 0:
        chunk = os.read(3, n)
        if not chunk:
            sys.exit(0)  # the host closed the pipe
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def error_json(exc, type_name=None):
    return json.dumps(error_fields(exc, type_name)).encode()


class Context:
    def __init__(self, meta, deadline):
        self.aws_request_id = meta.get("requestId")
        self.function_name = meta.get("function")
        self.function_version = meta.get("version")
        source = meta.get("source")
        self.client_context = {"custom": source} if source else None
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return self._deadline - int(time.time() * 1000)

    def metric(self, name, value):
        n = name.encode()
        write_frame(b"M", struct.pack("<H", len(n)) + n + struct.pack("<d", float(value)))


def main():
    try:
        handler = load_handler()
    except Exception as exc:
        write_frame(b"I", error_json(exc, "Runtime.ImportModuleError"))
        sys.exit(1)
    write_frame(b"R", b"")
    while True:
        (n,) = struct.unpack("<I", read_exact(4))
        body = read_exact(n)
        if body[:1] != b"V":
            continue
        seq, deadline, m = struct.unpack_from("<QqI", body, 1)
        meta = json.loads(body[21:21 + m] or b"{}")
        payload = body[21 + m:]
        try:
            event = json.loads(payload)
        except ValueError:
            event = payload.decode("utf-8", "replace")
        try:
            result = handler(event, Context(meta, deadline))
            write_frame(b"O", struct.pack("<Q", seq) + json.dumps(result).encode())
        except Exception as exc:
            write_frame(b"E", struct.pack("<Q", seq) + error_json(exc))


if __name__ == "__main__":
    main()
