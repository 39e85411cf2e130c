# -*- coding: utf-8 -*-
# A Link IoT Edge driver written from its thing access SDK's documentation,
# unchanged: a thermometer per device in the driver's configuration,
# reporting its temperature every two seconds and raising high_temperature
# above the threshold in the driver's json configuration; a change of
# configuration is logged.
import logging
import time
from threading import Timer

import lethingaccesssdk


class Thermometer(lethingaccesssdk.ThingCallback):
    def __init__(self, start):
        self.temperature = start

    def getProperties(self, input_value):
        if "temperature" in input_value:
            return 0, {"temperature": self.temperature}
        return -3, {}

    def setProperties(self, input_value):
        return -3, {}

    def callService(self, name, input_value):
        return -3, {}


def thing_behavior(client, thermometer, threshold):
    while True:
        thermometer.temperature = 25 if thermometer.temperature >= 35 else thermometer.temperature + 1
        client.reportProperties({"temperature": thermometer.temperature})
        if thermometer.temperature > threshold:
            client.reportEvent("high_temperature", {"temperature": thermometer.temperature})
        time.sleep(2)


def on_changed(config):
    print("config changed: %s" % config)


try:
    lethingaccesssdk.registerChangedCallback(on_changed)
    config = lethingaccesssdk.Config()
    threshold = ((config.getDriverInfo() or {}).get("json") or {}).get("threshold", 30)
    for info in config.getThingInfos():
        thermometer = Thermometer((info.get("custom") or {}).get("start", 25))
        client = lethingaccesssdk.ThingAccessClient(info)
        client.registerAndOnline(thermometer)
        t = Timer(2, thing_behavior, (client, thermometer, threshold))
        t.start()
except Exception as e:
    logging.error(e)


# don't remove this function
def handler(event, context):
    return 'hello world'
