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
        "custom": context.client_context.custom if context.client_context else None,
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



def decimal_result(event, context):
    """What a DynamoDB read returns: Decimals, which Lambda answers as
    numbers."""
    import decimal
    return {"count": decimal.Decimal("3"), "reading": decimal.Decimal("21.5")}


def datetime_result(event, context):
    import datetime
    return {"at": datetime.datetime(2026, 1, 2, 3, 4, 5)}


def logs(event, context):
    """Logs through the logging module's root logger, as Lambda code does."""
    import logging
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.info("logged through logging %s", context.aws_request_id)
    print("printed by %s" % context.aws_request_id)
    return context.aws_request_id


def context_members(event, context):
    cc = context.client_context
    return {
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "function_version": context.function_version,
        "custom": cc.custom if cc else None,
        "identity_id": context.identity.cognito_identity_id,
        "execution_env": os.environ.get("AWS_EXECUTION_ENV"),
    }


def fc(event, context):
    """A Function Compute handler: the event is bytes, the context FC's."""
    return {
        "is_bytes": isinstance(event, bytes),
        "text": event.decode(),
        "request_id": context.request_id,
        "function": {"name": context.function.name, "handler": context.function.handler,
                     "memory": context.function.memory, "timeout": context.function.timeout},
        "service": {"name": context.service.name, "qualifier": context.service.qualifier},
        "access_key_id": context.credentials.access_key_id,
        "region": context.region,
        "account_id": context.account_id,
    }


def fc_text(event, context):
    return "plain " + event.decode()
