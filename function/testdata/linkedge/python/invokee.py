# The function the invoker calls: it answers with what it was sent.


def handler(event, context):
    return "Returned from the invokee: " + event.decode()
