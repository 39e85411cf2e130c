# Test functions for the Python bootstrap.
import os
import sys
import time


def handler(event, context):
    print("python handling %s" % context.aws_request_id)
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "remaining_positive": context.get_remaining_time_in_millis() > 0,
        "custom": (context.client_context or {}).get("custom"),
        "traceparent": getattr(context, "traceparent", None),
        "tracestate": getattr(context, "tracestate", None),
    }


def failing(event, context):
    raise ValueError("bad reading")


def leak(event, context):
    hog = bytearray(512 * 1024 * 1024)
    return len(hog)


def echo(event, context):
    return event


def flood(event, context):
    line = "x" * 1023
    for _ in range(100 * 1024):  # 100 MB of output
        print(line)
    return "done"


def by_event(event, context):
    """Does what the event's "do" says: hang, crash (the process exits
    during the invocation), raise; anything else echoes."""
    do = event.get("do")
    if do == "hang":
        time.sleep(3600)
    if do == "crash":
        os._exit(5)
    if do == "raise":
        raise RuntimeError("asked to raise")
    return event


def wait_file(event, context):
    """Writes its request id to event["id_file"], then waits until
    event["go_file"] exists, and answers "mine"."""
    with open(event["id_file"], "w") as f:
        f.write(context.aws_request_id)
    while not os.path.exists(event["go_file"]):
        time.sleep(0.01)
    return "mine"

