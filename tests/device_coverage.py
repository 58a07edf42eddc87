"""Which public callables of npnn receive a device array in the tests (issue 14's measure).

    NPNN_DEVICE_COVERAGE=out.json python -m pytest -p device_coverage tests/ -k "..."

A profile hook watches every call of a public function or method defined in npnn
(names without a leading underscore, in modules without one); a call *takes
arrays* when one of its arguments is an array (NumPy or device; inside a tuple,
list or dict too; for a Module's method, its parameters count), and *reaches the
device path* when one of them is a device array (the strict stand-in's or CuPy's).
The file lists both sets, so that two runs can be compared.
"""

import importlib
import inspect
import json
import os
import pkgutil
import sys
import threading

import numpy as np

_TARGETS, _ARRAYS, _DEVICE = {}, set(), set()


def _public_callables():
    import npnn
    for info in pkgutil.walk_packages(npnn.__path__, "npnn."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]) or \
                info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield obj.__code__, f"{module.__name__}.{name}"
            elif inspect.isclass(obj):
                for m, f in vars(obj).items():
                    if inspect.isfunction(f) and (not m.startswith("_") or m == "__init__"):
                        yield f.__code__, f"{module.__name__}.{name}.{m}"


def _kind(value, depth=0):
    """'device', 'host' or None: the arrays in ``value``."""
    from npnn.backend import is_array
    if isinstance(value, np.ndarray):
        return "host"
    if is_array(value):
        return "device"
    if depth < 2 and isinstance(value, (tuple, list)):
        kinds = {_kind(v, depth + 1) for v in value}
    elif depth < 2 and isinstance(value, dict):
        kinds = {_kind(v, depth + 1) for v in value.values()}
    elif depth == 0 and hasattr(value, "params") and isinstance(value.params, dict):
        kinds = {_kind(v, depth + 1) for v in value.parameters()} \
            if hasattr(value, "parameters") else set()
    else:
        return None
    return "device" if "device" in kinds else "host" if "host" in kinds else None


def _hook(frame, event, arg):
    if event != "call":
        return
    name = _TARGETS.get(frame.f_code)
    if name is None or name in _DEVICE:
        return
    kinds = {_kind(v) for v in frame.f_locals.values()}
    if "device" in kinds:
        _DEVICE.add(name)
        _ARRAYS.add(name)
    elif "host" in kinds:
        _ARRAYS.add(name)


def pytest_configure(config):
    if os.environ.get("NPNN_DEVICE_COVERAGE"):
        _TARGETS.update(_public_callables())
        sys.setprofile(_hook)
        threading.setprofile(_hook)


def pytest_unconfigure(config):
    path = os.environ.get("NPNN_DEVICE_COVERAGE")
    if path:
        sys.setprofile(None)
        with open(path, "w") as f:
            json.dump({"callables": sorted(set(_TARGETS.values())), "take_arrays": sorted(_ARRAYS),
                       "device": sorted(_DEVICE)}, f, indent=1)
