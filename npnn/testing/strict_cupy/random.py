"""cupy.random: the legacy RandomState functions on device arrays (NumPy's generator)."""

import sys
from types import ModuleType
from typing import Any, Callable, Optional

import numpy as np


def _stand_in() -> ModuleType:
    """The stand-in package (looked up, not imported: it imports this module)."""
    return sys.modules[__package__]

_STATE = np.random.RandomState()


def seed(seed: Optional[int] = None) -> None:
    _STATE.seed(seed)


def _drawing(name: str) -> Callable[..., Any]:
    def draw(*args: Any, **kwargs: Any) -> Any:
        _stand_in()._record("launch", f"random.{name}")
        dtype = kwargs.pop("dtype", None)
        r = getattr(_STATE, name)(*args, **kwargs)
        return _stand_in()._wrap(np.asarray(r if dtype is None else np.asarray(r).astype(dtype)))
    draw.__name__ = name
    return draw


for _name in ("random", "random_sample", "rand", "randn", "standard_normal", "uniform",
              "normal", "randint"):
    globals()[_name] = _drawing(_name)
