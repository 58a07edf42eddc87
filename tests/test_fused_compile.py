"""Compile every fused GPU kernel with nvcc, without a GPU.

The kernels' bodies are expanded the way ``cupy.ElementwiseKernel`` expands them
(raw parameters are pointers indexed by hand, the others are references to
element i) and compiled for float and double. This catches what only a GPU run
would otherwise show (an undeclared name, a type error). Skipped without nvcc;
the kernels' numbers are checked against the plain path in test_fused.py on a GPU.
"""

import shutil
import subprocess

import numpy as np
import pytest

from npnn.functional import _fused

NVCC = shutil.which("nvcc")


def _capture(monkeypatch):
    captured = []

    def fake(in_params, out_params, body, name):
        captured.append((in_params, out_params, body, name))
        return lambda *args: None
    monkeypatch.setattr(_fused, "elementwise_kernel", fake)
    k = _fused.KERNELS
    z, g, s = np.zeros((2, 12), "f"), np.zeros((2, 9), "f"), np.zeros((2, 3), "f")
    k.lstm_forward_step(z, z, s, s, s, s)
    k.lstm_backward_step(z, s, s, s, s, z)
    k.gru_forward_step(g, g, s[0], s, s, s)
    k.gru_backward_step(g, s, s, s, z, s)
    for relu in (False, True):
        k.rnn_forward_step(s, s, s, relu)
        k.rnn_backward_step(s, s, s, relu)
    return captured


def _expand(in_params, out_params, body, name):
    params, refs = [], []
    for decl in (in_params + ", " + out_params).split(","):
        *mods, typ, var = decl.split()
        if mods == ["raw"]:
            params.append(("T*", var))
        elif typ == "T":
            params.append(("T*", "_" + var))
            refs.append(f"T& {var} = _{var}[i];")
        else:
            params.append(({"int32": "int"}.get(typ, typ), var))
    sig = ", ".join(f"{t} {v}" for t, v in params)
    lines = [f"template <typename T> __global__ void {name}({sig}, ptrdiff_t _size) {{",
             "  ptrdiff_t i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= _size) return;",
             "  " + " ".join(refs), body, "}"]
    for real in ("float", "double"):
        inst = ", ".join(t.replace("T", real) for t, _ in params)
        lines.append(f"template __global__ void {name}<{real}>({inst}, ptrdiff_t);")
    return "\n".join(lines)


@pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA compiler)")
def test_every_fused_kernel_compiles(monkeypatch, tmp_path):
    kernels = _capture(monkeypatch)
    assert len(kernels) == 8
    source = tmp_path / "kernels.cu"
    source.write_text("\n\n".join(_expand(*k) for k in kernels))
    run = subprocess.run([NVCC, "-c", "-o", str(tmp_path / "kernels.o"), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
