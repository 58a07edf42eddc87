"""Memory the accelerations reuse from call to call, instead of fresh pages each time.

A training step allocates the same large arrays at every call: the gates and states an
accelerated forward keeps for its backward, the backward's step gradients, the prepared
weights. Above glibc's mmap threshold each fresh array is new pages from the kernel, and
every page costs a fault and its zeroing on first touch: measured at LSTM S on this
project's machine, the forward's input product took 1.8 ms in place of 0.5 and the
backward's kernels 2.8 ms in place of 1.0, a quarter of the whole step
(benchmarks/RESULTS.md). PyTorch's CUDA allocator and CuPy's pool keep freed memory for
the same reason.

``empty(xp, shape, dtype)`` hands out arrays backed by buffers this module keeps. A
buffer is handed out again only when nothing but the pool refers to it: every NumPy
view holds a reference to the buffer at its base, so as long as any array made from it
lives (in a cache, in a result the caller kept, a view of a view), the buffer's
reference count says so and it is not reused. (The count of a buffer nothing else
refers to is measured once on the running interpreter, not assumed.) Nothing is ever
freed under an array still in use.

* On NumPy only (CuPy has its own pool), for arrays of at least ``MIN_BYTES`` (smaller
  ones come from the heap without page faults).
* A request no free buffer fits first drops the free buffers that no request took or
  found in use in the last ``STALE`` requests: the pool keeps no stock of sizes the
  program stopped asking for (shapes that change, bounded BPTT's segments), but keeps
  what a training step asks for at every step, in whatever order its arrays come and go. (Dropping
  every free buffer at a miss, as it once did, made a step whose first miss comes
  after arrays of its own were freed drop those, and miss them again at the next
  step: the language model of bench_lm got 7 new buffers a step.)
* At most ``limit()`` bytes are kept (``NPNN_POOL_MB``, default ``LIMIT_MB``), in use or
  not: a new buffer that would pass it drops the free buffers last in use longest ago,
  and where even all of them would not make room it drops none and the array is a
  plain ``np.empty``.
  ``NPNN_POOL=0`` switches the pool off; ``release()`` drops every free buffer now.
* Buffers are 64-byte aligned (a cache line, an AVX-512 register).
"""

import os
import sys
import threading
from typing import Any, List, Tuple

import numpy as np
from numpy.typing import DTypeLike

from ..._typing import Array, ArrayModule

#: Arrays smaller than this are not pooled (bytes).
MIN_BYTES = 1 << 17
#: The bytes the pool keeps at most, unless NPNN_POOL_MB says otherwise.
LIMIT_MB = 512
#: A free buffer serves an array of at least 1 / FIT of its size: a tight fit, so that a
#: step's smaller arrays do not take the buffers its larger ones will ask for (then those
#: would miss, and make new buffers).
FIT = 1.25
ALIGN = 64
#: A buffer neither taken nor seen in use in this many requests is dropped at the next
#: miss.
STALE = 64

_LOCK = threading.Lock()
#: [raw uint8 buffer, offset of its aligned start, aligned capacity in bytes, the last
#: request that took it or found it in use], oldest first
_BUFFERS: List[List[Any]] = []
#: Pooled requests so far
_TICK = [0]


def enabled() -> bool:
    return os.environ.get("NPNN_POOL", "1") != "0"


def limit() -> int:
    """The bytes the pool keeps at most."""
    try:
        return int(float(os.environ.get("NPNN_POOL_MB", LIMIT_MB)) * 2 ** 20)
    except ValueError:
        raise ValueError(f"expected NPNN_POOL_MB to be a number of megabytes, got "
                         f"{os.environ['NPNN_POOL_MB']!r}") from None


def _refs(entries: List[List[Any]], k: int) -> int:
    """``sys.getrefcount`` of entry k's buffer, always taken by this same expression."""
    return sys.getrefcount(entries[k][0])


def _idle_refs() -> int:
    """What ``_refs`` reads for a buffer that only its list entry refers to, measured on
    this interpreter (its own argument counts in some versions of CPython, not in others:
    the test must not assume either)."""
    if not _IDLE:
        _IDLE.append(_refs([[np.empty(1, dtype=np.uint8), 0, 1, 0]], 0))
    return _IDLE[0]


_IDLE: List[int] = []


def _free(k: int) -> bool:
    """Whether nothing but the pool refers to buffer k (no name here is bound to it)."""
    return _refs(_BUFFERS, k) <= _idle_refs()


def empty(xp: ArrayModule, shape: Any, dtype: DTypeLike) -> Array:
    """``xp.empty(shape, dtype)``, from a reused buffer where this module pools."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if xp is not np or size < MIN_BYTES or not enabled():
        return xp.empty(shape, dtype=dtype)
    with _LOCK:
        _TICK[0] += 1
        best = -1
        for k in range(len(_BUFFERS)):
            if not _free(k):                    # in use: not stale, whenever it was taken
                _BUFFERS[k][3] = _TICK[0]
                continue
            capacity = _BUFFERS[k][2]
            if size <= capacity <= FIT * size and (best < 0 or capacity < _BUFFERS[best][2]):
                best = k
        if best < 0:
            best = _new(size)
            if best < 0:
                return np.empty(shape, dtype=dtype)
        _BUFFERS[best][3] = _TICK[0]
        offset = _BUFFERS[best][1]
        return _BUFFERS[best][0][offset:offset + size].view(dtype).reshape(shape)


def _new(size: int) -> int:
    """A new buffer of ``size`` bytes at the end of the list (its index), -1 where it would
    not fit within ``limit()``. The free buffers neither taken nor seen in use in the last
    ``STALE`` requests are dropped first; then, where the new one would pass the limit
    and dropping free buffers makes room, the free ones last in use longest ago."""
    now = _TICK[0]
    _BUFFERS[:] = [e for k, e in enumerate(_BUFFERS) if not (_free(k) and now - e[3] > STALE)]
    over = sum(e[2] for e in _BUFFERS) + size - limit()
    if over > 0:
        free = sorted((k for k in range(len(_BUFFERS)) if _free(k)), key=lambda k: _BUFFERS[k][3])
        if sum(_BUFFERS[k][2] for k in free) < over:
            return -1                           # no room even without them: keep them
        drop = set()
        for k in free:
            if over <= 0:
                break
            drop.add(k)
            over -= _BUFFERS[k][2]
        _BUFFERS[:] = [e for k, e in enumerate(_BUFFERS) if k not in drop]
    raw = np.empty(size + ALIGN, dtype=np.uint8)
    _BUFFERS.append([raw, -raw.ctypes.data % ALIGN, size, now])
    return len(_BUFFERS) - 1


def release() -> None:
    """Drop every buffer no array uses (they go back to the allocator)."""
    with _LOCK:
        _BUFFERS[:] = [_BUFFERS[k] for k in range(len(_BUFFERS)) if not _free(k)]


def kept() -> Tuple[int, int]:
    """(bytes the pool keeps, bytes of it in use now)."""
    with _LOCK:
        return (sum(entry[2] for entry in _BUFFERS),
                sum(_BUFFERS[k][2] for k in range(len(_BUFFERS)) if not _free(k)))


def matmul(xp: ArrayModule, a: Array, b: Array) -> Array:
    """a @ b (2-D) into an array of ``empty``'s."""
    out = empty(xp, (a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype))
    return xp.matmul(a, b, out=out)


def input_half(xp: ArrayModule, x: Array, W: Array) -> Array:
    """x_t W^T for every step (``_recurrent.input_half``) into an array of ``empty``'s:
    x (T, N, D), W (K, D) -> (T, N, K)."""
    T, N, D = x.shape
    return matmul(xp, x.reshape(T * N, D), W.T).reshape(T, N, W.shape[0])


def transposed(xp: ArrayModule, W: Array, scale: Any = None) -> Array:
    """(W * scale[:, None])^T contiguous (scale None: W^T), in one pass into an array of
    ``empty``'s: the prepared recurrent weight of the batch-major products, and of the
    feature-major backward's."""
    out = empty(xp, W.shape[::-1], W.dtype)
    if scale is None:
        out[...] = W.T
    else:
        xp.multiply(W.T, scale, out=out)
    return out
