"""edgekit: what a Python function asks of the gateway it runs on, standard
library only. It is beside the bootstraps, on the function's module path
(import edgekit); the methods are package function/fnapi's, spoken over the
native protocol's pipes, or through the gateway's local API for functions
on a runtime API.

    import edgekit
    edgekit.publish("outputs/my-fn/alarm", {"temperature": 81}, qos=1)
    got = edgekit.get_properties("boiler-1", ["temperature"])

Each call blocks until the gateway answers. It is bounded by the deadline
of the invocation whose context it is given (context=, for a thread that
outlives the handler), else of the invocation running on the thread that
calls; timeout_ms bounds it further, and the function's timeout always.
A thread that calls without a context is bounded by the timeout alone. A
refusal raises EdgekitError, whose type says why: Forbidden (outside the
function's permissions), BadRequest, Timeout, Unavailable, TooManyCalls,
UnknownDevice, UnknownProperty, UnknownService, InvalidValue, ReadOnly,
Offline, UnknownFunction, Throttled, or an invoked function's own error
type.
"""
import json
import threading
import time

import edgekit_bootstrap_common as _common

EdgekitError = _common.EdgekitError

__all__ = ["EdgekitError", "publish", "flush", "invoke", "get_properties", "set_properties", "call_service",
           "list_devices", "get_config", "log", "on_config_change", "driver", "Driver"]


def _bytes(v):
    """A payload as it travels: bytes as they are, str as UTF-8, anything
    else as JSON."""
    if v is None:
        return b""
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode()
    return json.dumps(v).encode()


def _call(method, args, payload=None, timeout_ms=None, context=None, no_wait=False):
    transport = _common.calls[0]
    if transport is None:
        raise EdgekitError("Unavailable", "%s: no way to the gateway: the native protocol or the gateway's local API (EDGEKIT_API) is needed" % method)
    if no_wait and hasattr(transport, "send"):
        transport = transport.send
    deadline = 0
    if context is None and threading.current_thread() is _common.serving[0]:
        context = _common.current[0]
    if context is not None:
        deadline = int(time.time() * 1000) + context.get_remaining_time_in_millis()
    if timeout_ms:
        own = int(time.time() * 1000) + int(timeout_ms)
        if not deadline or own < deadline:
            deadline = own
    return transport(method, args, _bytes(payload), deadline)


def _json(method, args, timeout_ms=None, context=None):
    return json.loads(_call(method, args, None, timeout_ms, context))


def publish(topic, payload=None, qos=0, retain=False, content_type=None, user_properties=None, timeout_ms=None, context=None,
            no_wait=False):
    """Sends payload on topic through the gateway's bus. The function may
    publish under outputs/{its name}/ and on what its permissions list.
    user_properties: a dict, or (name, value) pairs in order. no_wait
    returns once the message is written to the gateway, without waiting
    for its answer (on the native protocol; elsewhere it waits): messages
    sent so reach the bus in order, and flush() returns what the gateway
    refused of them."""
    args = {"topic": topic}
    if qos:
        args["qos"] = qos
    if retain:
        args["retain"] = True
    if content_type:
        args["contentType"] = content_type
    if user_properties:
        pairs = user_properties.items() if isinstance(user_properties, dict) else user_properties
        args["userProperties"] = [[str(k), str(v)] for k, v in pairs]
    _call("publish", args, payload, timeout_ms, context, no_wait)


def flush(timeout_ms=None, context=None):
    """Waits until the gateway has carried out every publish made with
    no_wait before it, and raises an EdgekitError when it refused any of
    them since the last flush: how many, with the first refusal's type
    and message."""
    if hasattr(_common.calls[0], "send"):
        _call("flush", {}, None, timeout_ms, context)


def invoke(function, event=None, async_=False, timeout_ms=None, context=None, raw=False):
    """Calls a function with event and returns its result (parsed when
    JSON, its bytes with raw); with async_ it is queued and None is
    returned."""
    args = {"function": function}
    if async_:
        args["async"] = True
    out = _call("invoke", args, event, timeout_ms, context)
    if async_:
        return None
    if raw:
        return out
    try:
        return json.loads(out)
    except ValueError:
        return out


def get_properties(device, ids=None, timeout_ms=None, context=None):
    """Reads a device's properties (none named: all):
    {"properties": {id: value}, "errors": {id: why}}."""
    args = {"device": device}
    if ids:
        args["properties"] = list(ids)
    return _json("device.get", args, timeout_ms, context)


def set_properties(device, values, timeout_ms=None, context=None):
    """Writes a device's properties, each checked against its thing model
    first; returns {id: None when written, else why}."""
    return _json("device.set", {"device": device, "properties": values}, timeout_ms, context)["results"]


def call_service(device, service, input=None, timeout_ms=None, context=None):
    """Calls a device's service and returns its output."""
    args = {"device": device, "service": service}
    if input:
        args["input"] = input
    return _json("device.call", args, timeout_ms, context)["output"]


def list_devices(labels=None, timeout_ms=None, context=None):
    """The devices the function may reach: [{"name", "state", "labels"}];
    with labels ({key: value}), those that carry every one of them."""
    return _json("device.list", {"labels": labels} if labels else {}, timeout_ms, context)["devices"]


_LEVELS = {"debug": 0, "info": 1, "warn": 2, "warning": 2, "error": 3}


def log(level, message):
    """Sends a record at level ("debug", "info", "warn" or "error") to the
    function's log on the gateway."""
    n = _LEVELS.get(level)
    if n is None:
        raise EdgekitError("BadRequest", "log: level %r (want debug, info, warn or error)" % (level,))
    _common.log_record[0](n, message if isinstance(message, str) else json.dumps(message))


def on_config_change(listener):
    """Registers listener, called with the configuration each time a
    deployment changes it while the instance runs, between invocations
    (native protocol; on a runtime API the instance is restarted with it
    instead)."""
    _common.config_listeners.append(listener)


def get_config(timeout_ms=None, context=None):
    """The function's configuration as deployed (None when it has none)."""
    return _json("config.get", {}, timeout_ms, context)


def _wire_error(e):
    """An exception as a driver's answer carries it for one property."""
    return {"errorType": getattr(e, "type", None) or type(e).__name__, "errorMessage": getattr(e, "message", None) or str(e)}


class Driver:
    """A device driver written as a continuous function (edgekit.driver):
    the gateway hands it devices to serve and asks it to read, write and
    call them; it reports what its devices tell.

    devices are the devices the gateway gave it, by name: {"name", "tsl"
    (the thing model, TSL), "config", "labels"}; config is the driver's
    configuration."""

    def __init__(self, impl):
        self.impl = impl
        self.devices = {}
        self._keys = {}
        self._lock = threading.Lock()
        hello = _json("driver.hello", {})
        self.config = hello["config"]
        # bound are the devices bound to the driver when it said hello (it
        # is given each by an attach too).
        self.bound = hello.get("devices") or []

    def _thing(self, name):
        with self._lock:
            t = self.devices.get(name)
        if t is None:
            raise EdgekitError("UnknownDevice", "device %s: not one of this driver's" % name)
        return t

    def serve(self, op):
        """Answers one of the gateway's driver ops."""
        impl, kind = self.impl, op.get("op")
        if kind in ("attach", "update"):
            t = op["thing"]
            key = json.dumps(t, sort_keys=True)
            with self._lock:
                known, same = t["name"] in self.devices, self._keys.get(t["name"]) == key
            if same:
                return None
            f = getattr(impl, "update", None) if known else None
            f = f or getattr(impl, "attach", None)
            if f:
                f(t)
            with self._lock:
                self.devices[t["name"]], self._keys[t["name"]] = t, key
            return None
        if kind == "detach":
            with self._lock:
                known = self.devices.pop(op["device"], None) is not None
                self._keys.pop(op["device"], None)
            if known and getattr(impl, "detach", None):
                impl.detach(op["device"])
            return None
        t = self._thing(op["device"])
        if kind == "get":
            f = getattr(impl, "get_properties", None)
            if f is None:
                raise EdgekitError("UnknownProperty", "device %s: the driver reads no properties" % op["device"])
            got = f(t, op["properties"]) or {}
            out = {"properties": {}, "errors": {}}
            for id_ in op["properties"]:
                v = got.get(id_, _MISSING)
                if isinstance(v, BaseException):
                    out["errors"][id_] = _wire_error(v)
                elif v is not _MISSING:
                    out["properties"][id_] = v
            return out
        if kind == "set":
            f = getattr(impl, "set_properties", None)
            if f is None:
                raise EdgekitError("ReadOnly", "device %s: the driver writes no properties" % op["device"])
            res = f(t, op["values"]) or {}
            return {"errors": {k: _wire_error(v) for k, v in res.items() if isinstance(v, BaseException)}}
        if kind == "call":
            f = getattr(impl, "call_service", None)
            if f is None:
                raise EdgekitError("UnknownService", "device %s: the driver calls no services" % op["device"])
            return {"output": f(t, op["service"], op.get("input") or {}) or {}}
        raise EdgekitError("BadRequest", "driver op %r: unknown" % (kind,))

    def report(self, device, properties, time_ms=None, timeout_ms=None):
        """Hands over property values a device told ({id: value}); returns
        the values the thing model refused ({id: why}, empty when all were
        taken). time_ms: when they were read (Unix ms)."""
        args = {"device": device, "properties": properties}
        if time_ms:
            args["time"] = int(time_ms)
        return _json("driver.report", args, timeout_ms).get("refused") or {}

    def event(self, device, event, output=None, time_ms=None, timeout_ms=None):
        """Hands over an event with its output, checked against the model."""
        args = {"device": device, "event": event}
        if output:
            args["output"] = output
        if time_ms:
            args["time"] = int(time_ms)
        _call("driver.event", args, None, timeout_ms)

    def state(self, device, state, cause=None, timeout_ms=None):
        """Tells a device's link state: "online", "offline" or "degraded".
        A device is online once its attach returns, unless the driver says
        otherwise."""
        args = {"device": device, "state": state}
        if cause:
            args["cause"] = str(cause)
        _call("driver.state", args, None, timeout_ms)

    def online(self, device, timeout_ms=None):
        self.state(device, "online", None, timeout_ms)

    def offline(self, device, cause=None, timeout_ms=None):
        self.state(device, "offline", cause, timeout_ms)

    def degraded(self, device, cause=None, timeout_ms=None):
        self.state(device, "degraded", cause, timeout_ms)


_MISSING = object()


def driver(impl):
    """Registers the program as a device driver and says hello to the
    gateway; returns the Driver. impl's methods, each optional:
    attach(device) and update(device) (a device to serve, again after a
    restart), detach(name), get_properties(device, ids) -> {id: value, or
    an exception for that one}, set_properties(device, values) -> {id: an
    exception for one not written}, call_service(device, service, input)
    -> output. A method that raises an EdgekitError of a device type
    (UnknownDevice, UnknownProperty, UnknownService, InvalidValue,
    ReadOnly, Offline) refuses the request as that. The invocations that
    carry these requests never reach the handler."""
    if _common.driver[0] is not None:
        raise EdgekitError("BadRequest", "edgekit.driver: the program registered a driver already")
    d = Driver(impl)
    _common.driver[0] = d.serve
    return d
