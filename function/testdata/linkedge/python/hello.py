# A long-lived function written to Link IoT Edge's core SDK documentation:
# it publishes a hello every second; its handler does nothing.
import threading

import lecoresdk

it = lecoresdk.IoTData()


def publish():
    it.publish({"topic": "/hello/world", "payload": "Hello from Python on the edge."})
    threading.Timer(1, publish).start()


threading.Timer(1, publish).start()


def handler(event, context):
    return "hello world"
