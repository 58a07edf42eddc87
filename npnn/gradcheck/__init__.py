"""Finite-difference gradient checks, for npnn's ops and for your own.

The check follows one recipe (CS231n's): draw a random ``dout`` for every
output, define the scalar

    L(inputs) = sum_k sum(out_k * dout_k),

so that the analytic gradient of L is exactly what a backward pass returns
when fed ``dout``, and compare it, tensor by tensor, with central differences

    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

computed in float64. The error of a tensor is its normwise relative error in
the max-norm,

    err = max_i |analytic_i - numeric_i| / max(max_i |analytic_i|, max_i |numeric_i|),

reported with the index i where the largest difference occurs.

Your function takes the inputs as keyword arguments and returns
``(outputs, vjp)``: ``outputs`` an array or a tuple of arrays, ``vjp`` a
function that maps the output gradients (same structure) to a dict of input
gradients keyed like the inputs::

    def f(x, W):
        y, cache = linear_forward(x, W)

        def vjp(dy):
            dx, grads = linear_backward(dy, cache)
            return {"x": dx, "W": grads["W"]}
        return y, vjp

    report = check_gradients(f, {"x": x, "W": W})
    print(report)          # a table; report.passed is True or False

Inputs are copied to C-ordered float64 arrays before they are perturbed, so any
layout works (a transposed weight, a slice).

``python -m npnn.gradcheck`` checks every op of the library and prints the table.
"""

from .core import (GradCheckReport, GradientCheckError, GradientCheckWarning, TensorCheck,
                   check_all_ops, check_gradients, gate_names)
from .modules import check_module

__all__ = ["check_gradients", "check_module", "check_all_ops", "GradCheckReport", "TensorCheck",
           "GradientCheckError", "GradientCheckWarning", "gate_names"]
