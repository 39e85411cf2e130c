"""lethingaccesssdk: Link IoT Edge's thing access SDK for Python drivers, as
its documentation describes it (getConfig, Config, ThingCallback,
ThingAccessClient), on edgekit's driver API (edgekit.driver). A driver
written for Link IoT Edge that imports it runs unchanged, deployed as a
driver app. Standard library only; edgekit's own code.

How it maps:
  - getConfig() is the driver's configuration as a JSON string,
    {"config": the app's configuration, "deviceList": [{"productKey",
    "deviceName", "custom"}]}: the devices bound to the driver app (a
    device's label productKey, its name, its config as a JSON string).
    Config().getThingInfos() lists them with custom parsed;
    Config().getDriverInfo() is the app's configuration.
  - registerChangedCallback(f) (also Config.registerChangedCallback): f
    gets that JSON string each time the configuration or the devices
    change.
  - ThingAccessClient({"productKey", "deviceName"}).registerAndOnline(cb)
    brings the device online; the gateway's reads, writes and service calls
    for it reach cb's getProperties(keys), setProperties(values) and
    callService(name, args), each returning (code, output): a code other
    than 0 fails the request. reportProperties and reportEvent hand values
    over, checked against the device's thing model; online, offline,
    getTsl, unregister and cleanup as documented.
"""
import json
import threading

import edgekit

__all__ = ["getConfig", "Config", "ThingCallback", "ThingAccessClient", "registerChangedCallback"]

LEDA_SUCCESS = 0
LEDA_ERROR_FAILED = -3

_lock = threading.Lock()
_clients = {}  # registered ThingAccessClients, by device name
_things = {}  # the devices bound to the driver, by name
_listeners = []


def _product_key(t):
    return (t.get("labels") or {}).get("productKey") or t["name"]


def getConfig():
    """The driver's configuration, as Link IoT Edge's config manager holds
    it: a JSON string."""
    with _lock:
        things = list(_things.values())
    devices = []
    for t in things:
        d = {"productKey": _product_key(t), "deviceName": t["name"]}
        if t.get("config") is not None:
            d["custom"] = json.dumps(t["config"], separators=(",", ":"))
        devices.append(d)
    return json.dumps({"config": _driver.config, "deviceList": devices}, separators=(",", ":"))


def _changed():
    s = getConfig()
    for f in list(_listeners):
        try:
            f(s)
        except Exception as e:  # a listener's failure is its own
            print("lethingaccesssdk: a changed callback failed: %s" % e)


def registerChangedCallback(callback):
    """Calls callback with the configuration (a JSON string) each time it
    or the driver's devices change."""
    _listeners.append(callback)


def unregisterChangedCallback(callback):
    if callback in _listeners:
        _listeners.remove(callback)


class Config(object):
    """The driver's configuration: the current one, or the JSON string
    given."""

    registerChangedCallback = staticmethod(registerChangedCallback)
    unregisterChangedCallback = staticmethod(unregisterChangedCallback)

    def __init__(self, config=None):
        try:
            parsed = json.loads(config if config is not None else getConfig())
        except ValueError:
            raise ValueError("Config is not JSON string!")
        self._driver_info = parsed.get("config")
        self._thing_infos = []
        for d in parsed.get("deviceList") or []:
            custom = d.get("custom")
            try:
                custom = json.loads(custom) if custom is not None else None
            except ValueError:
                custom = None
            self._thing_infos.append({"productKey": d.get("productKey"), "deviceName": d.get("deviceName"), "custom": custom})

    def getThingInfos(self):
        return self._thing_infos

    def getDriverInfo(self):
        return self._driver_info


class ThingCallback(object):
    """What a device's driver implements: each returns (code, output)."""

    def setProperties(self, input_value):
        return LEDA_ERROR_FAILED, {}

    def getProperties(self, input_value):
        return LEDA_ERROR_FAILED, {}

    def callService(self, name, input_value):
        return LEDA_ERROR_FAILED, {}


def _client(name):
    with _lock:
        c = _clients.get(name)
    if c is None:
        raise edgekit.EdgekitError("Offline", "device %s: no ThingAccessClient registered it" % name)
    return c


def _answer(what, name, result):
    """A callback's (code, output) as the gateway takes it."""
    code, output = result if isinstance(result, tuple) else (LEDA_SUCCESS, result)
    if code != LEDA_SUCCESS:
        raise edgekit.EdgekitError("Error", "%s of %s: code %s" % (what, name, code))
    return output or {}


class _Link(object):
    """The edgekit driver under the SDK: the gateway's requests reach the
    registered clients' callbacks."""

    def attach(self, t):
        with _lock:
            fresh = t["name"] not in _things
            _things[t["name"]] = t
            registered = t["name"] in _clients
            bound = _driver is not None and any(b["name"] == t["name"] for b in _driver.bound)
        if not registered:
            _driver.offline(t["name"], "the driver has not registered it")
        if fresh and not bound:
            _changed()

    def update(self, t):
        with _lock:
            _things[t["name"]] = t
        _changed()

    def detach(self, name):
        with _lock:
            _things.pop(name, None)
        _changed()

    def get_properties(self, t, ids):
        return _answer("getProperties", t["name"], _client(t["name"]).callback.getProperties(list(ids)))

    def set_properties(self, t, values):
        _answer("setProperties", t["name"], _client(t["name"]).callback.setProperties(values))
        return {}

    def call_service(self, t, service, input):
        return _answer("callService " + service, t["name"], _client(t["name"]).callback.callService(service, input))


_driver = None
_driver = edgekit.driver(_Link())
with _lock:
    for _t in _driver.bound:
        _things[_t["name"]] = _t


def _config_changed(cfg):
    _driver.config = cfg
    _changed()


edgekit.on_config_change(_config_changed)


class ThingAccessClient(object):
    """Connects one device: config is {"productKey", "deviceName"}."""

    def __init__(self, config):
        if not isinstance(config, dict) or not config.get("productKey") or not (config.get("deviceName") or config.get("localName")):
            raise ValueError("Illegal config")
        self.config = config
        self.name = config.get("deviceName") or config.get("localName")
        self.callback = None

    def registerAndOnline(self, callback):
        if callback is None:
            raise ValueError("Illegal callback")
        self.callback = callback
        with _lock:
            _clients[self.name] = self
        _driver.online(self.name)

    def online(self):
        _driver.online(self.name)

    def offline(self):
        _driver.offline(self.name, "the driver took it offline")

    def reportProperties(self, properties):
        try:
            refused = _driver.report(self.name, properties)
            if refused:
                print("reportProperties of %s: refused %s" % (self.name, json.dumps(refused)))
        except edgekit.EdgekitError as e:
            print("reportProperties of %s: %s" % (self.name, e))

    def reportEvent(self, eventName, args):
        try:
            _driver.event(self.name, eventName, args)
        except edgekit.EdgekitError as e:
            print("reportEvent %s of %s: %s" % (eventName, self.name, e))

    def getTsl(self):
        with _lock:
            t = _things.get(self.name)
        if t is None:
            raise ValueError("device %s: not bound to this driver" % self.name)
        return json.dumps(t["tsl"])

    def cleanup(self):
        with _lock:
            if _clients.get(self.name) is self:
                del _clients[self.name]
        try:
            _driver.offline(self.name, "the driver cleaned it up")
        except edgekit.EdgekitError:
            pass

    def unregister(self):
        self.cleanup()
