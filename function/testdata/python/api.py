"""A Python function that makes the gateway API call its event names and
answers {answer} or {error: {type, message, is, stack}}, as the native Go
test function's api behaviour does (function/internal/testfunctions)."""
import threading

import os

import edgekit

# A changed configuration is published on outputs/{name}/config.
edgekit.on_config_change(lambda cfg: edgekit.publish("outputs/%s/config" % os.environ["AWS_LAMBDA_FUNCTION_NAME"], cfg))


def handler(c, context):
    try:
        answer = None
        call = c.get("call")
        if call == "publish":
            for i in range(max(c.get("repeat") or 0, 1)):
                edgekit.publish(c["topic"], str(i) if c.get("repeat") else c.get("payload", ""), qos=c.get("qos", 0),
                                user_properties={"from": "python"}, no_wait=c.get("noWait", False))
            if c.get("noWait"):
                edgekit.flush()
        elif call == "invoke":
            answer = edgekit.invoke(c["function"], c.get("payload"))
        elif call == "invoke-async":
            edgekit.invoke(c["function"], c.get("payload"), async_=True)
        elif call == "get":
            for _ in range(max(c.get("repeat") or 0, 1)):
                answer = edgekit.get_properties(c["device"], c.get("ids"))
        elif call == "set":
            answer = edgekit.set_properties(c["device"], c["values"])
        elif call == "service":
            answer = edgekit.call_service(c["device"], c["service"], c.get("values"))
        elif call == "list":
            answer = edgekit.list_devices(c.get("labels"))
        elif call == "log":
            edgekit.log(c.get("level") or "warn", c["payload"])
        elif call == "config":
            answer = edgekit.get_config()
        elif call == "late":
            # A thread the invocation started calls with its context
            # after its deadline.
            def late():
                try:
                    edgekit.publish(c["topic"], "late", context=context)
                    print("late call: taken")
                except edgekit.EdgekitError as e:
                    print("late call: %s" % e.type)
            threading.Timer(max(0, context.get_remaining_time_in_millis()) / 1000 + 0.02, late).start()
            answer = "scheduled"
        else:
            raise ValueError("unknown call %s" % call)
        return {"answer": answer}
    except edgekit.EdgekitError as e:
        return {"error": {"type": e.type, "message": e.message, "is": e.type, "stack": e.stack_trace}}
