# What the Lambda and native Python bootstraps share: loading the handler
# named by _HANDLER from LAMBDA_TASK_ROOT and describing an error.
import importlib
import os
import sys
import traceback


def load_handler():
    spec = os.environ.get("_HANDLER", "")
    module, _, name = spec.rpartition(".")
    if not module:
        raise ValueError('handler "%s" must be module.function' % spec)
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT", "."))
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError('handler "%s": %s is not a function' % (spec, name))
    return fn


def error_fields(exc, type_name=None):
    return {
        "errorType": type_name or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__),
    }
