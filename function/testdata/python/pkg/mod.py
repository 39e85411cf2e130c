# A handler named in the path form: pkg/mod.handler.
def handler(event, context):
    return {"path_form": True, "event": event}
