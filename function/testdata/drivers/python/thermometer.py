"""A driver written as a continuous Python function against edgekit's
driver API: simulated thermometers, one per device the gateway attaches.
Device config: start (the first temperature), slow (reads take 2 s).
Driver config: interval (ms between reports), threshold (an overheat event
above it). Services: reset, heat {to}, crash (the process exits), hang
(the process stops answering). The handler lets a test speak the driver
API directly: {"do": "report"|"event"|"state"|"flood", ...}."""
import os
import threading
import time

import edgekit

things = {}
lock = threading.Lock()


def _set_up(t, keep):
    c = t.get("config") or {}
    with lock:
        old = things.get(t["name"])
        if keep and old:
            old["slow"] = bool(c.get("slow"))
        else:
            things[t["name"]] = {"temperature": c.get("start", 20), "setpoint": 50, "slow": bool(c.get("slow"))}


class Thermometers:
    def attach(self, t):
        _set_up(t, False)

    def update(self, t):
        _set_up(t, True)

    def detach(self, name):
        with lock:
            things.pop(name, None)

    def get_properties(self, t, ids):
        s = things[t["name"]]
        if s["slow"]:
            time.sleep(2)
        return {i: s[i] if i in ("temperature", "setpoint") else edgekit.EdgekitError("UnknownProperty", "%s: this thermometer has none" % i)
                for i in ids}

    def set_properties(self, t, values):
        things[t["name"]].update(values)

    def call_service(self, t, service, input):
        s = things[t["name"]]
        if service == "reset":
            s["temperature"] = 20
            return {"ok": True}
        if service == "heat":
            s["temperature"] = input["to"]
            tell(t["name"])
            return {"ok": True}
        if service == "crash":
            os._exit(3)
        if service == "hang":
            while True:
                time.sleep(3600)
        raise edgekit.EdgekitError("UnknownService", service)


driver = edgekit.driver(Thermometers())


def tell(name):
    """Reports a device's temperature, and an overheat event above the
    driver's threshold."""
    s = things.get(name)
    if s is None:
        return
    driver.report(name, {"temperature": s["temperature"]})
    threshold = (driver.config or {}).get("threshold")
    if threshold is not None and s["temperature"] > threshold:
        driver.event(name, "overheat", {"temperature": s["temperature"]})


def _reporter(every):
    while True:
        time.sleep(every / 1000.0)
        with lock:
            names = list(things)
        for name in names:
            try:
                tell(name)
            except edgekit.EdgekitError as e:
                print("report", name, e.type, e.message)


_every = (driver.config or {}).get("interval")
if _every:
    threading.Thread(target=_reporter, args=(_every,), daemon=True).start()


def handler(event, context):
    try:
        if event.get("do") == "report":
            return {"refused": driver.report(event["device"], event["properties"])}
        if event.get("do") == "event":
            driver.event(event["device"], event["event"], event.get("output"))
            return {"ok": True}
        if event.get("do") == "state":
            driver.state(event["device"], event["state"], event.get("cause"))
            return {"ok": True}
        if event.get("do") == "flood":  # n reports, one at a time (a benchmark's)
            for i in range(event["n"]):
                driver.report(event["device"], {"temperature": 20 + i % 10})
            return {"ok": True}
        return {"devices": sorted(things)}
    except edgekit.EdgekitError as e:
        return {"type": e.type, "message": e.message}
