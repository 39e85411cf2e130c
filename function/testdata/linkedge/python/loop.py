# -*- coding: utf-8 -*-
# A long-lived function as Link IoT Edge's core SDK README writes one: it
# publishes in a loop at import, before its handler is even defined.
import logging
import time

import lecoresdk

it = lecoresdk.IoTData()
pub_params = {"topic": "/topic/hello", "payload": "hello world"}
while True:
    time.sleep(1)
    it.publish(pub_params)
    print("publish success")


# don't remove this function
def handler(event, context):
    return 'hello world'
