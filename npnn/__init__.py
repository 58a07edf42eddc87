"""npnn: recurrent neural networks in NumPy/CuPy with hand-derived backpropagation.

``npnn.functional`` holds the pure forward/backward pairs, ``npnn.gradcheck``
the finite-difference checker, ``npnn.backend`` the NumPy/CuPy switch.
"""

__version__ = "0.1.0"

from . import backend, functional  # noqa: E402,F401
