"""The types that npnn's annotations share.

``Array`` is a NumPy or a CuPy ndarray. Every op is written once for both backends
(``xp = get_array_module(x)``), and CuPy ships no type stubs, so no precise type holds
both: ``Array`` is ``Any``, a name that says what the value is while the checker checks
everything around it (arguments, results, caches, the calls between modules).
``numpy.typing.NDArray`` would claim NumPy where CuPy flows too.

``ArrayModule`` is an array module, ``numpy`` or ``cupy`` (what ``get_array_module``
returns, the ``xp`` of every op): a module, whose attributes the checker cannot know.

``Seed`` is what a layer's ``seed`` takes (``layers.base.make_rng``); ``States`` a
recurrent layer's or cell's state(s): one array, a tuple of them (LSTM's ``(h, c)``,
a member None where not given), or None.

``Vjp`` and ``CheckedFunction`` are the protocol of the gradient checks
(``npnn.gradcheck``): its checker and its cases share them.
"""

from types import ModuleType
from typing import Any, Callable, Dict, Optional, Tuple, TypeAlias, Union

import numpy as np

#: A NumPy or CuPy ndarray (see the module docstring: ``Any``, as CuPy has no stubs).
Array: TypeAlias = Any
#: ``numpy`` or ``cupy``.
ArrayModule: TypeAlias = ModuleType

#: A seed: an int, a ``numpy.random.Generator`` (shared, drawn from), or None (fresh).
Seed: TypeAlias = Union[int, np.integer[Any], np.random.Generator, None]
#: One state array, a tuple of them (a member None where not given), or None.
States: TypeAlias = Union[Array, Tuple[Optional[Array], ...], None]
#: A vjp: the outputs' gradients (one array, or a tuple like the outputs) -> the inputs'
#: gradients by name.
Vjp: TypeAlias = Callable[[Any], Dict[str, Any]]
#: A checked function: ``f(**inputs) -> (outputs, vjp)`` (``npnn.gradcheck``'s docstring).
CheckedFunction: TypeAlias = Callable[..., Tuple[Any, Vjp]]

__all__ = ["Array", "ArrayModule", "CheckedFunction", "Seed", "States", "Vjp"]
