# A function written to Link IoT Edge's core SDK documentation: it sets a
# thing's property, reads it back, calls a service and finds things by
# tag, and answers what it got. The event names the thing.
import json

import lecoresdk


def handler(event, context):
    thing = json.loads(event)
    it = lecoresdk.IoTData()
    pk, dn = thing["productKey"], thing["deviceName"]
    got = {
        "set": it.setThingProperties({"productKey": pk, "deviceName": dn, "payload": {"setpoint": 65}}),
        "get": it.getThingProperties({"productKey": pk, "deviceName": dn, "payload": ["setpoint"]}),
        "service": it.callThingService({"productKey": pk, "deviceName": dn, "service": "reboot", "payload": {"delay": 1}}),
        "things": it.getThingsWithTags({"payload": [{"room": "cellar"}]}),
    }
    return json.dumps(got)
