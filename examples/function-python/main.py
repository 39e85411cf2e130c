# An edge function written for AWS Lambda's Python runtime, unchanged.
THRESHOLD = 80


def handler(event, context):
    if not isinstance(event, dict) or not event.get("device"):
        raise ValueError("reading without a device")
    print("checking %s" % event["device"])
    return {
        "device": event["device"],
        "alarm": event.get("temperature", 0) > THRESHOLD,
        "threshold": THRESHOLD,
        "requestId": context.aws_request_id,
    }
