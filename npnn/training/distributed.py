"""Data parallelism on MPI: one process per core, GPU or machine, as Horovod and DDP do it.

    mpiexec -n 8 npnn train --batch 256 --out runs/x       (or srun, or python -m mpi4py)

Every process (a *rank*) holds the whole model. Each step:

    (1) every rank takes its rows of the global batch (all ranks draw the batch
        from one shared data generator, ``World.rows``);
    (2) forward and backward on those rows: a gradient g_r of a loss that is a
        mean over w_r target elements;
    (3) one small allreduce of (w_r l_r, w_r, why this rank would stop):
        W = sum w_r, the global loss sum w_r l_r / W and one stop decision;
    (4) g_r *= w_r / W, then the gradients are summed by allreduce over flat
        buckets: g = sum_r w_r g_r / W, the gradient of the global mean (the
        one-process gradient when the batch is split so; exactly, also with
        padding whose targets are ignored);
    (5) clipping and the optimizer step, the same on every rank.

``world()`` is the world this process was launched in: ``MPIWorld`` under an MPI
launcher (mpi4py imported only then), else the one-process ``World``, whose
collectives do nothing, so the same code runs unlaunched. ``DataParallel``
(which ``npnn.fit.fit(..., world=...)`` applies) does (3)-(5) and the rest:
rank 0's parameters and optimizer buffers are broadcast first; each rank's
dropout generators are rank 0's jumped ``rank`` times (independent streams);
the gradients become views into the buckets (about ``BUCKET_BYTES`` each,
filled in reverse order of the parameters, as DDP's); evaluation, checkpoints
and the log are rank 0's unless the hooks are ``collective``.

On CuPy each rank takes the GPU ``local_rank % devices`` and the buckets are
reduced by NCCL (``cupy.cuda.nccl``, its unique id broadcast over MPI, as
ChainerMN's ``pure_nccl`` communicator), or staged through the host when NCCL
is missing or two ranks share a GPU.

An uncaught exception on any rank aborts the whole job (``MPI_Abort``), so no
rank is left waiting in a collective; errors every rank meets together (a set-up
error, divergence) end every rank normally, through ``from_root`` and ``all_ok``.
"""

import os
import importlib.util
import sys
import time
import warnings

import numpy as np

from .._checks import check_positive_int
from ..backend import backend_name, cupy_module, get_array_module
from .loop import INTERRUPTED

#: Bytes of gradient per allreduce bucket (DDP's default, 25 MB).
BUCKET_BYTES = 25 * 2 ** 20
#: Set by MPI launchers: mpiexec/mpirun of MPICH, Intel MPI, Open MPI, MVAPICH, and
#: srun's PMI-2/PMIx plugins.
LAUNCH_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_RANK",
                    "PMI_RANK")
#: Why to stop, in the order one rank's reason wins over another's; "interrupted" is a
#: Ctrl-C raised inside a step (no handler): that step is dropped on every rank.
REASONS = (INTERRUPTED, "SIGINT", "SIGTERM", "SIGHUP", "time")


class PeerError(RuntimeError):
    """Another process failed (its message is rank 0's to show); this one stops too."""


class World:
    """One process: rank 0 of 1. Every collective returns its input."""

    rank, size, local_rank, local_size = 0, 1, 0, 1

    def __repr__(self):
        return f"{type(self).__name__}(rank {self.rank} of {self.size})"

    def rows(self, n):
        """This rank's rows of a global batch of ``n`` rows: a slice, the same length on
        every rank (ValueError if ``n`` does not divide evenly)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n % self.size:
            raise ValueError(f"expected a batch that splits evenly over {self.size} "
                             f"processes (a multiple of {self.size}), got {n!r}")
        k = int(n) // self.size
        return slice(self.rank * k, (self.rank + 1) * k)

    def allreduce(self, array):
        """Sum ``array`` (NumPy or CuPy) over the ranks, in place; returns it."""
        return array

    def bcast_array(self, array, root=0):
        """Overwrite ``array`` with rank ``root``'s, in place; returns it."""
        return array

    def bcast(self, obj, root=0):
        """Rank ``root``'s ``obj`` (any picklable object), on every rank."""
        return obj

    def allgather(self, obj):
        """Every rank's ``obj``, in rank order, on every rank."""
        return [obj]

    def gather(self, obj, root=0):
        """Every rank's ``obj`` in rank order on ``root``, None elsewhere."""
        return [obj]

    def barrier(self):
        pass

    def abort(self, code=1):
        """End every process of the job now with exit status ``code``."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def data_parallel(self, hooks, model, optimizer):
        """``hooks`` wrapped for data-parallel training of ``model`` over this world's
        processes (``DataParallel``); what ``npnn.training.fit`` calls when ``size > 1``,
        so that the loop itself imports nothing of MPI."""
        return DataParallel(hooks, model, optimizer, self)

    def use_device(self):
        """Select this rank's GPU (``local_rank`` modulo the devices); returns its id."""
        cupy = cupy_module()
        if cupy is None:
            return None
        n = cupy.cuda.runtime.getDeviceCount()
        device = self.local_rank % n
        cupy.cuda.Device(device).use()
        return device


LOCAL = World()


class MPIWorld(World):
    """The processes of ``comm`` (an mpi4py communicator, default COMM_WORLD)."""

    def __init__(self, comm=None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._nccl = None           # NCCL communicator, made at the first CuPy allreduce
        self._nccl_usable = None

    # -- NumPy arrays go straight to MPI; CuPy arrays through NCCL or the host ----------
    def allreduce(self, array):
        xp = get_array_module(array)
        if xp is np:
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        elif self._use_nccl(array):
            from cupy.cuda import nccl
            self._nccl.allReduce(array.data.ptr, array.data.ptr, array.size,
                                 _nccl_dtype(nccl, array.dtype), nccl.NCCL_SUM,
                                 xp.cuda.get_current_stream().ptr)
        else:                                    # host staging
            host = xp.asnumpy(array)
            self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
            array.set(host)
        return array

    def bcast_array(self, array, root=0):
        xp = get_array_module(array)
        if xp is np:
            self.comm.Bcast(array, root=root)
        elif self._use_nccl(array):
            from cupy.cuda import nccl
            self._nccl.bcast(array.data.ptr, array.size, _nccl_dtype(nccl, array.dtype), root,
                             xp.cuda.get_current_stream().ptr)
        else:
            host = xp.asnumpy(array)
            self.comm.Bcast(host, root=root)
            array.set(host)
        return array

    def _use_nccl(self, array):
        """Whether CuPy arrays go through NCCL: it imports, and every rank has a GPU of
        its own (NCCL refuses two ranks on one device)."""
        if self._nccl_usable is None:
            cupy = cupy_module()
            try:
                from cupy.cuda import nccl
                own = cupy.cuda.runtime.getDeviceCount() >= self.local_size
            except Exception:
                nccl, own = None, False
            usable = self.comm.allreduce(int(nccl is not None and own), op=self.MPI.MIN) == 1
            if usable:
                uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None)
                self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
            self._nccl_usable = usable
        return self._nccl_usable

    # -- Python objects (pickled) ------------------------------------------------------
    def bcast(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def gather(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    #: Seconds between flushing this process's output and MPI_Abort: the launcher forwards
    #: output asynchronously and the abort kills the job at once, so without a pause the
    #: one line that says why can be lost (seen under load, a 2-core machine running
    #: other work: the failing process's stderr arrived empty).
    ABORT_GRACE_S = 1.0

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        time.sleep(self.ABORT_GRACE_S)
        self.comm.Abort(code)


def _nccl_dtype(nccl, dtype):
    try:
        return {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                "float64": nccl.NCCL_FLOAT64}[np.dtype(dtype).name]
    except KeyError:
        raise TypeError(f"expected float16, float32 or float64 arrays for NCCL, got "
                        f"{np.dtype(dtype)}") from None


def launched_size(environ=None):
    """The number of processes an MPI launcher (or srun) says it started, or None when
    this process was not started by one."""
    env = os.environ if environ is None else environ
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        if env.get(name, "").isdigit():
            return int(env[name])
    if "PMIX_RANK" in env or "PMI_RANK" in env:
        return 0            # a launcher that does not say how many: ask MPI
    return None


def launched_rank(environ=None):
    """This process's rank as its launcher says (0 when not launched), before any MPI call."""
    env = os.environ if environ is None else environ
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMIX_RANK"):
        if env.get(name, "").isdigit():
            return int(env[name])
    return 0


_WORLD = []


def current():
    """The world ``world()`` made, or the one-process world if it was never called."""
    return _WORLD[0] if _WORLD else LOCAL


def world(environ=None):
    """This process's world: ``MPIWorld`` when an MPI launcher started it (or mpi4py's
    MPI is already initialised: ``python -m mpi4py``), else the one-process ``LOCAL``.
    Under MPI with more than one process, an uncaught exception aborts the job."""
    if _WORLD:
        return _WORLD[0]
    env = os.environ if environ is None else environ
    size = launched_size(env)
    if size is None and "mpi4py.MPI" not in sys.modules:
        found = LOCAL
    elif size == 1 and "mpi4py.MPI" not in sys.modules:
        found = LOCAL
    else:
        if importlib.util.find_spec("mpi4py") is None:
            raise RuntimeError(
                f"npnn runs under an MPI launcher ({_launch_variable(env)}) but mpi4py is "
                "not installed: install the extra, pip install \"npnn[mpi]\" (in npnn's "
                "folder: pip install -e \".[mpi]\")")
        try:
            with warnings.catch_warnings():   # mpi4py's own warning of a foreign launcher:
                warnings.filterwarnings(      # npnn says it below, in one line
                    "ignore", message="suspicious MPI execution environment")
                found = MPIWorld()
        except ImportError as e:        # installed, but its MPI library cannot be loaded
            raise RuntimeError(
                f"npnn runs under an MPI launcher ({_launch_variable(env)}) but mpi4py cannot "
                f"load its MPI library ({e}); reinstall mpi4py against the MPI of this "
                "launcher, or run without the launcher") from None
        if found.size == 1:
            if size is not None and size > 1:
                raise RuntimeError(
                    f"the launcher started {size} processes ({_launch_variable(env)}) but MPI "
                    "sees one process in each: mpi4py is built for another MPI than the "
                    "launcher's (e.g. an MPICH mpi4py under Open MPI's mpirun); use the "
                    "mpiexec of mpi4py's MPI (python -c \"import mpi4py; "
                    "print(mpi4py.get_config())\")")
            found = LOCAL
        else:
            _check_versions(found)
            _abort_on_uncaught_exceptions(found)
    steps = env.get("SLURM_STEP_NUM_TASKS", "")
    if steps.isdigit() and int(steps) > 1 and found.size == 1:
        raise RuntimeError(f"srun started {steps} tasks but MPI sees one process in each: "
                           "they would train alone side by side; launch with srun's MPI "
                           "plugin (srun --mpi=pmi2 or --mpi=pmix), or with mpiexec")
    _WORLD.append(found)
    return found


def _check_versions(w):
    """Every process must run the same npnn (the messages they exchange are its own):
    RuntimeError on every rank, naming the versions, if not."""
    from .._version import __version__
    versions = w.allgather(__version__)
    if len(set(versions)) > 1:
        found = ", ".join(f"process {r}: {v}" for r, v in enumerate(versions))
        raise RuntimeError(f"the processes run different versions of npnn ({found}); install "
                           "one version everywhere")


def _launch_variable(env):
    return next(f"{k}={env[k]}" for k in LAUNCH_VARIABLES if k in env)


def _abort_on_uncaught_exceptions(w):
    """As ``python -m mpi4py``: a traceback, then MPI_Abort, instead of a rank that exits
    while the others wait for it forever."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            code = 130
        else:
            code = 1
            print(f"npnn: process {w.rank} of {w.size} failed; ending every process",
                  file=sys.stderr)
        previous(kind, value, tb)
        w.abort(code)
    sys.excepthook = hook


# -- errors met together ---------------------------------------------------------------
def agreed(error):
    """Whether every process raised ``error`` (its own, or a PeerError) at the same point,
    so that none waits for another: the processes may end normally."""
    return getattr(error, "_npnn_every_process", False)


def mark_agreed(error):
    error._npnn_every_process = True
    return error


class _Failed:
    def __init__(self, error):
        self.message = str(error) or type(error).__name__


def from_root(w, make):
    """``make()`` on rank 0, its result sent to every rank (pickled). If it raised there,
    rank 0 raises it and every other rank a PeerError: no rank is left waiting."""
    if w.size == 1:
        return make()
    if w.rank == 0:
        try:
            result = make()
        except BaseException as e:
            w.bcast(_Failed(e))
            raise mark_agreed(e)
        w.bcast(result)
        return result
    result = w.bcast(None)
    if isinstance(result, _Failed):
        raise mark_agreed(PeerError(result.message))
    return result


def all_ok(w, fn):
    """Run ``fn()`` on every rank, then agree: if it raised anywhere, every rank raises
    (a rank its own error; rank 0, when it did not fail, a PeerError holding the first
    failing rank's message; the others a PeerError). Returns ``fn()``'s result."""
    if w.size == 1:
        return fn()
    try:
        result, error = fn(), None
    except Exception as e:
        result, error = None, e
    failed = w.allgather(None if error is None else _Failed(error).message)
    if error is not None:
        raise mark_agreed(error)
    first = next(((r, m) for r, m in enumerate(failed) if m is not None), None)
    if first is not None:
        raise mark_agreed(PeerError(f"process {first[0]} of {w.size}: {first[1]}"))
    return result


# -- gradients in flat buckets ----------------------------------------------------------
class GradientBuckets:
    """The model's gradients as views into flat arrays of about ``bucket_bytes`` each,
    one dtype and backend per bucket, filled in reverse order of the parameters (DDP's
    layout). ``optimizer``, if given, is rebound to the views."""

    def __init__(self, model, optimizer=None, bucket_bytes=BUCKET_BYTES):
        check_positive_int("bucket_bytes", bucket_bytes)
        plan = []                  # lists of gradients, one list per bucket
        for g in list(model.gradients())[::-1]:
            last = plan[-1] if plan else None
            if last is None or _key(last[0]) != _key(g) or \
                    (sum(x.size for x in last) + g.size) * g.itemsize > bucket_bytes:
                plan.append([g])
            else:
                last.append(g)
        self.buckets, views = [], {}
        for members in plan:
            xp = get_array_module(members[0])
            flat = xp.empty(sum(g.size for g in members), dtype=members[0].dtype)
            offset = 0
            for g in members:
                view = flat[offset:offset + g.size].reshape(g.shape)
                view[...] = g
                views[id(g)] = view
                offset += g.size
            self.buckets.append(flat)
        for _, module in model.named_modules():         # tied parameters: every name
            for name, g in list(module.grads.items()):
                if id(g) in views:
                    module.grads[name] = views[id(g)]
        if optimizer is not None:
            optimizer.pairs = [(p, views.get(id(g), g)) for p, g in optimizer.pairs]
        self.nbytes = sum(int(b.nbytes) for b in self.buckets)

    def scale(self, factor):
        for b in self.buckets:
            b *= factor

    def allreduce(self, w):
        for b in self.buckets:
            w.allreduce(b)


# -- the hooks of npnn.fit ----------------------------------------------------------------
def _key(g):
    return backend_name(get_array_module(g)), np.dtype(g.dtype).str


def _codes(stop):
    """A stop decision as counts: one slot per known reason, the last for any other."""
    counts = [0.0] * (len(REASONS) + 1)
    if stop is not None:
        counts[REASONS.index(stop) if stop in REASONS else len(REASONS)] = 1.0
    return counts


def jump_generators(generators, rank):
    """Give rank ``rank`` its own streams: each generator's state jumped ``rank`` times
    (numpy's PCG64 ``jumped``: 2^127-step strides, independent streams); rank 0 keeps its
    own. Ranks that draw the same numbers of variates stay each other's jumps, so rank
    0's state alone (a checkpoint's) gives every rank's back."""
    for g in generators:
        if rank:
            g.bit_generator.state = g.bit_generator.jumped(rank).state


class DataParallel:
    """What ``npnn.fit.fit`` runs when ``world.size > 1``: wraps ``hooks`` (see the module
    docstring for a step). ``hooks.collective`` True: their ``evaluate`` and ``save`` take
    part in collectives and run on every rank; False (the default): they run on rank 0 and
    their outcome is broadcast. Other hooks run on every rank; the log is rank 0's."""

    def __init__(self, hooks, model, optimizer, w, bucket_bytes=BUCKET_BYTES):
        from .checkpoint import module_generators
        self.inner, self.world = hooks, w
        self.unit = hooks.unit
        self.buckets = GradientBuckets(model, optimizer, bucket_bytes)
        broadcast_parameters(w, model, optimizer)
        jump_generators(module_generators(model), w.rank)

    def __getattr__(self, name):           # begin, start_epoch, end_epoch, describe, ...
        return getattr(self.inner, name)

    def _reduce_scalars(self, loss_sum, weight, stop):
        totals = np.array([loss_sum, weight] + _codes(stop), dtype=np.float64)
        self.world.allreduce(totals)
        counts = totals[2:]
        if counts[-1]:                        # a reason fit does not know: rank order decides
            stop = next(s for s in self.world.allgather(stop) if s is not None and
                        s not in REASONS)
        else:
            stop = next((r for r, c in zip(REASONS, counts) if c), None)
        return float(totals[0]), float(totals[1]), stop

    def reduce(self, model, loss, weight, stop):
        stop = stop if stop == INTERRUPTED else self.inner.agree(stop)
        loss_sum = loss * weight if weight else 0.0
        loss_sum, total, stop = self._reduce_scalars(loss_sum, weight, stop)
        if stop == INTERRUPTED:
            return 0.0, 0.0, stop
        if total:
            self.buckets.scale(weight / total)
        self.buckets.allreduce(self.world)
        self.inner.after_backward(model)
        return (loss_sum / total if total else float("nan")), total, stop

    def agree(self, stop):
        return self._reduce_scalars(0.0, 0.0, self.inner.agree(stop))[2]

    def evaluate(self, state, record):
        if getattr(self.inner, "collective", False):
            return self.inner.evaluate(state, record)
        return from_root(self.world, lambda: self.inner.evaluate(state, record))

    def save(self, state):
        if getattr(self.inner, "collective", False):
            return self.inner.save(state)
        return from_root(self.world, lambda: self.inner.save(state))

    def diverged(self, error):
        # the loss, parameters and metrics are the same everywhere, so is the error
        return mark_agreed(self.inner.diverged(error))


def broadcast_parameters(w, model, optimizer=None):
    """Rank 0's parameters (in place) and, given ``optimizer``, its step count, rate and
    buffers, on every rank."""
    for p in model.parameters():
        w.bcast_array(p)
    if optimizer is not None:
        state = from_root(w, lambda: optimizer.state_dict() if optimizer.step_count else None)
        if state is not None and w.rank:
            optimizer.load_state_dict(state)
