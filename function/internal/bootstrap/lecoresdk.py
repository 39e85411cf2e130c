"""lecoresdk: Link IoT Edge's core SDK for Python functions, as its
documentation describes it (IoTData, Client), on edgekit's function API
(the edgekit module beside it). Code written for Link IoT Edge that imports
it runs unchanged. Standard library only; edgekit's own code.

How the calls map:
  - IoTData().publish({topic, payload}): a publish; the function's
    permissions must allow the topic. Returns 0.
  - getThingProperties / setThingProperties / callThingService
    ({productKey, deviceName, [service], payload}): the device named
    deviceName (its label productKey, when it has one, names its product);
    returns {"code": 0, "message": "success", "output": {...}}.
  - getThingsWithTags({payload: [{key: value}, ...]}): the devices that
    carry every label, as [{"productKey", "deviceName"}].
  - Client().invoke_function({functionId | serviceName + functionName,
    invocationType, payload}): the function of that name; Sync returns
    {"statusCode", "functionError", "payload"} with the result base64
    encoded, as the SDK's does; Async returns "success".
A refusal (outside the function's permissions, an unknown device, a value
the thing model refuses) returns {"errorType", "errorMessage"}, the shape
of the SDK's failed calls; a missing parameter raises ValueError.
"""
import base64
import json

import edgekit

__all__ = ["IoTData", "Client"]

# The gateway's own refusals of an invoke, as opposed to the invoked
# function's error.
_REFUSALS = {"Forbidden", "BadRequest", "Timeout", "Unavailable", "TooManyCalls", "UnknownFunction", "Throttled"}


def _required(params, name):
    if not isinstance(params, dict) or params.get(name) is None:
        raise ValueError('Can\'t find required parameter "%s".' % name)
    return params[name]


def _refused(e):
    return {"errorType": e.type, "errorMessage": e.message}


class IoTData(object):
    def publish(self, params):
        topic, payload = _required(params, "topic"), _required(params, "payload")
        try:
            edgekit.publish(topic, payload)
        except edgekit.EdgekitError as e:
            return _refused(e)
        return 0

    def getThingProperties(self, params):
        return self._thing(params, "get", _required(params, "payload"))

    def setThingProperties(self, params):
        return self._thing(params, "set", _required(params, "payload"))

    def callThingService(self, params):
        return self._thing(params, _required(params, "service"), params.get("payload"))

    def _thing(self, params, service, payload):
        _required(params, "productKey")
        device = _required(params, "deviceName")
        try:
            if service == "get":
                output = edgekit.get_properties(device, payload)["properties"]
            elif service == "set":
                failed = {k: why for k, why in edgekit.set_properties(device, payload).items() if why is not None}
                if failed:
                    return {"errorType": "InvalidValue", "errorMessage": "; ".join("%s: %s" % kv for kv in sorted(failed.items()))}
                output = {}
            else:
                if isinstance(payload, (str, bytes)):
                    payload = json.loads(payload)
                output = edgekit.call_service(device, service, payload or None)
        except edgekit.EdgekitError as e:
            return _refused(e)
        return {"code": 0, "message": "success", "output": output}

    def getThingsWithTags(self, params):
        labels = {}
        for tag in _required(params, "payload"):
            labels.update(tag)
        try:
            devices = edgekit.list_devices(labels)
        except edgekit.EdgekitError as e:
            return _refused(e)
        return [{"productKey": (d.get("labels") or {}).get("productKey", ""), "deviceName": d["name"]} for d in devices]


class Client(object):
    def invoke_function(self, params):
        name = params.get("functionId") if isinstance(params, dict) else None
        name = name or _required(params, "functionName")
        kind = params.get("invocationType") or "Sync"
        if kind not in ("Sync", "Async"):
            raise ValueError("invocationType %r: want Sync or Async" % (kind,))
        payload = params.get("payload", "")
        try:
            if kind == "Async":
                edgekit.invoke(name, payload, async_=True)
                return "success"
            out = edgekit.invoke(name, payload, raw=True)
            return {"statusCode": 200, "functionError": "", "payload": base64.b64encode(out).decode()}
        except edgekit.EdgekitError as e:
            if e.type in _REFUSALS:
                return _refused(e)
            body = json.dumps({"errorType": e.type, "errorMessage": e.message, "stackTrace": e.stack_trace}).encode()
            return {"statusCode": 200, "functionError": "Unhandled", "payload": base64.b64encode(body).decode()}
