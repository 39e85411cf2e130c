# A function written to Link IoT Edge's core SDK documentation: it invokes
# another function with a string and answers what that one returned.
import base64
import json

import lecoresdk


def handler(event, context):
    fc = lecoresdk.Client()
    ctx = base64.standard_b64encode(json.dumps({"custom": {"data": "from the invoker"}}).encode()).decode()
    ret = fc.invoke_function({"serviceName": "edge", "functionName": "link-invokee", "invocationType": "Sync",
                              "invokerContext": ctx, "payload": "String message from the invoker."})
    return json.dumps({"statusCode": ret["statusCode"], "functionError": ret["functionError"],
                       "payload": base64.b64decode(ret["payload"]).decode()})
