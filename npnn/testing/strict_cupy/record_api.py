"""Record the API surface of an installed CuPy into ``cupy_api.json`` (run by hand after
upgrading the CuPy that the stand-in follows; CuPy imports without a GPU)::

    pip install --target /tmp/cupy-ref --no-deps cupy-cuda12x "cuda-pathfinder>=1.3.4,<2" fastrlock
    PYTHONPATH=/tmp/cupy-ref python -m npnn.testing.strict_cupy.record_api

What is kept: every public name of ``cupy``, ``cupy.random`` and ``cupyx`` with its kind
('function' with its parameters, 'ufunc', 'module', 'class', 'other'), and every
public attribute of ``cupy.ndarray`` with its parameters (read from the signature
CuPy embeds in each method's docstring). The stand-in (``npnn.testing.strict_cupy``) refuses
any name or keyword argument that is not in this file.
"""

import inspect
import json
import os
import re
import sys
from types import ModuleType
from typing import Any, Dict, List, Optional


def parameters(fn: Any) -> Optional[List[List[str]]]:
    """[(name, kind)] of a callable, or None when it has no readable signature."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        line = (getattr(fn, "__doc__", None) or "").split("\n")[0]
        m = re.match(r"[\w.]+\((.*)\)", line)
        if not m:
            return None
        try:
            sig = inspect.signature(eval(f"lambda {m.group(1)}: None"))   # noqa: S307
        except SyntaxError:
            return None
    return [[p.name, p.kind.name] for p in sig.parameters.values() if p.name != "self"]


def describe(obj: Any) -> Dict[str, Any]:
    import cupy
    if isinstance(obj, cupy.ufunc):
        return {"kind": "ufunc", "nin": obj.nin, "nout": obj.nout}
    if inspect.ismodule(obj):
        return {"kind": "module"}
    if inspect.isclass(obj):
        return {"kind": "class", "params": parameters(obj)}
    if callable(obj):
        return {"kind": "function", "params": parameters(obj)}
    return {"kind": "other"}


def namespace(module: ModuleType) -> Dict[str, Dict[str, Any]]:
    return {name: describe(getattr(module, name)) for name in sorted(dir(module))
            if not name.startswith("_")}


def main() -> None:
    import cupy
    import cupyx
    api = {"version": cupy.__version__, "cupy": namespace(cupy),
           "cupy.random": namespace(cupy.random), "cupyx": namespace(cupyx),
           "ndarray": {}}
    for name in sorted(dir(cupy.ndarray)):
        if name.startswith("_") and name not in ("__array__", "__array_function__",
                                                 "__array_ufunc__", "__getitem__",
                                                 "__setitem__", "__len__", "__iter__",
                                                 "__float__", "__int__", "__bool__",
                                                 "__complex__", "__index__", "__matmul__"):
            continue
        attr = getattr(cupy.ndarray, name)
        kind = "method" if callable(attr) else "attribute"
        api["ndarray"][name] = {"kind": kind, "params": parameters(attr) if kind == "method"
                                else None}
    api["ufunc_methods"] = sorted(n for n in dir(cupy.add) if not n.startswith("_"))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_api.json")
    with open(path, "w") as f:
        json.dump(api, f, indent=0, sort_keys=True)
    print(f"wrote {path}: CuPy {cupy.__version__}, {len(api['cupy'])} names", file=sys.stderr)


if __name__ == "__main__":
    main()
