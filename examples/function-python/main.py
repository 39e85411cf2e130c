# An edge function written for AWS Lambda's Python runtime: given a
# reading, it runs there unchanged. On an edgekit gateway it also reads the
# device itself when the event names only the device, and publishes its
# alarms on the gateway's bus, through the gateway API (the edgekit module
# beside the bootstrap). Its manifest lets it read the boiler and publish on
# outputs/alarms; its threshold comes from the deployment's configuration.
import json
import os

try:
    import edgekit
except ImportError:  # on Lambda: no gateway
    edgekit = None


def threshold():
    # The configuration as deployed; a change reaches a running instance
    # without a restart (edgekit sets the variable for later invocations).
    return json.loads(os.environ.get("EDGEKIT_FUNCTION_CONFIG") or "{}").get("threshold", 80)


def handler(event, context):
    if not isinstance(event, dict) or not event.get("device"):
        raise ValueError("reading without a device")
    device = event["device"]
    temperature = event.get("temperature")
    if temperature is None and edgekit:
        read = edgekit.get_properties(device, ["temperature"])
        temperature = read["properties"].get("temperature")
        if temperature is None:
            raise ValueError("%s: temperature: %s" % (device, read.get("errors", {}).get("temperature")))
    print("checking %s" % device)
    verdict = {
        "device": device,
        "alarm": temperature is not None and temperature > threshold(),
        "temperature": temperature,
        "threshold": threshold(),
        "requestId": context.aws_request_id,
    }
    if verdict["alarm"] and edgekit:
        edgekit.publish("outputs/alarms", verdict, qos=1)
    return verdict
