"""dlps: the dlagent parameter-server client (docs/ps.md, "Python").

Pure Python over libdlps's C API (agent/ps/c_api.h) through ctypes, so that it works with any CPython >= 3.8
and any numpy >= 1.17. Arrays are used in place (float32, C-contiguous; `out` writable): push_nocopy and
pushpull send from the array's memory, and pull and pushpull fill `out` directly. The client keeps a
reference to every array of a ticket until wait(), so they stay alive. ctypes releases the GIL during every
call into the library, so other Python threads run while one waits.

    c = dlps.Client()                       # DLPS_SERVERS, DLPS_RANK, DLPS_NUM_WORKERS
    c.init(7, weights, optimizer="sgd", lr=0.1)
    c.wait(c.pushpull(7, grad, weights))    # weights now hold the round's result
    c.barrier()
    c.close()

report() tells the node's agent how training goes and needs no library. The library is loaded at the first
call that needs it, found as DLPS_LIBRARY (a path), else as libdlps.so.0 beside this file, else by the system's
library search (the package installs it in the library directory).
"""
import ctypes
import os
import socket
import threading

import numpy as np

__all__ = ["Client", "Error", "report"]


class Error(RuntimeError):
    """A failed call; str() names the server and what failed, `code` is the status ("unavailable", ...)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class _Optimizer(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_char_p)] + [
        (name, ctypes.c_float)
        for name in ("learning_rate", "momentum", "weight_decay", "beta1", "beta2", "epsilon", "rescale")
    ]


class _ConnectOptions(ctypes.Structure):
    _fields_ = [
        ("servers", ctypes.c_char_p),
        ("rank", ctypes.c_uint32),
        ("num_workers", ctypes.c_uint32),
        ("deadline_seconds", ctypes.c_double),
        ("connect_timeout_seconds", ctypes.c_double),
    ]


def _load():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libdlps.so.0")
    path = os.environ.get("DLPS_LIBRARY") or (here if os.path.exists(here) else "libdlps.so.0")
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError("dlps: cannot load %s (%s); is the dlagent package installed? DLPS_LIBRARY names the "
                          "library's path" % (path, e)) from e
    u32, u64, client, floats = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p
    for name, restype, argtypes in [
        ("dlps_connect_with", client, [ctypes.POINTER(_ConnectOptions), ctypes.c_char_p, ctypes.c_size_t]),
        ("dlps_close", None, [client]),
        ("dlps_rank", u32, [client]),
        ("dlps_num_workers", u32, [client]),
        ("dlps_init", ctypes.c_int, [client, u64, floats, u64, ctypes.POINTER(_Optimizer)]),
        ("dlps_push", u64, [client, u64, floats, u64]),
        ("dlps_push_nocopy", u64, [client, u64, floats, u64]),
        ("dlps_pull", u64, [client, u64, floats, u64]),
        ("dlps_pushpull", u64, [client, u64, floats, floats, u64]),
        ("dlps_wait", ctypes.c_int, [client, u64]),
        ("dlps_barrier", ctypes.c_int, [client]),
        ("dlps_checkpoint", ctypes.c_int, [client, ctypes.c_char_p]),
        ("dlps_restore", ctypes.c_int, [client, ctypes.c_char_p]),
        ("dlps_last_error", ctypes.c_char_p, []),
        ("dlps_last_code", ctypes.c_int, []),
        ("dlps_code_name", ctypes.c_char_p, [ctypes.c_int]),
    ]:
        f = getattr(lib, name)
        f.restype, f.argtypes = restype, argtypes
    return lib


_loaded = None
_loading = threading.Lock()


def _lib():
    """libdlps, loaded at the first call that needs it: report() needs none, so a rank can report without it."""
    global _loaded
    with _loading:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _error(code, message=None):
    if message is None:
        message = _lib().dlps_last_error()  # the calling thread's, as the library keeps it
    return Error(message.decode("utf-8", "replace"), _lib().dlps_code_name(code).decode())


def _check(code):
    if code != 0:
        raise _error(code)


def _buffer(a, name, writable):
    """The array's address, checked: float32, C-contiguous (and writable for outputs)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags["C_CONTIGUOUS"]:
        raise TypeError("%s must be a C-contiguous float32 numpy array (np.ascontiguousarray(x, dtype=np.float32))" % name)
    if writable and not a.flags["WRITEABLE"]:
        raise ValueError("%s must be writable" % name)
    return a.ctypes.data


class Client:
    """Connects to the job's servers: the DLPS_* environment, or servers=['host:port', ...], rank, num_workers.

    deadline: seconds per message (default 120); connect_timeout: seconds to keep retrying a refused server
    (default 30).
    """

    def __init__(self, servers=None, rank=None, num_workers=None, deadline=0.0, connect_timeout=0.0):
        o = _ConnectOptions()
        if servers is not None:
            if isinstance(servers, str):
                servers = [servers]
            o.servers = ",".join(servers).encode()
            o.rank = 0 if rank is None else rank
            o.num_workers = 1 if num_workers is None else num_workers
        o.deadline_seconds = deadline
        o.connect_timeout_seconds = connect_timeout
        err = ctypes.create_string_buffer(1024)
        self._c = _lib().dlps_connect_with(ctypes.byref(o), err, len(err))
        if not self._c:
            raise _error(_lib().dlps_last_code(), err.value)
        self._lock = threading.Lock()
        self._held = {}  # ticket -> the arrays the library reads or writes until wait()

    @property
    def rank(self):
        return _lib().dlps_rank(self._live())

    @property
    def num_workers(self):
        return _lib().dlps_num_workers(self._live())

    def init(self, key, initial, optimizer="sum", lr=0.0, momentum=0.0, weight_decay=0.0, beta1=0.0, beta2=0.0,
             epsilon=0.0, rescale=0.0):
        """Collective: declares key with rank 0's initial values and the servers' optimizer (sgd, adam or sum;
        0 takes the default)."""
        data = _buffer(initial, "initial", False)
        opt = _Optimizer(optimizer.encode(), lr, momentum, weight_decay, beta1, beta2, epsilon, rescale)
        _check(_lib().dlps_init(self._live(), key, data, initial.size, ctypes.byref(opt)))

    def push(self, key, grad):
        """Sends a copy of grad; returns a ticket."""
        return self._hold(_lib().dlps_push(self._live(), key, _buffer(grad, "grad", False), grad.size), ())

    def push_nocopy(self, key, grad):
        """Sends from grad's memory: do not change grad until wait(ticket)."""
        return self._hold(_lib().dlps_push_nocopy(self._live(), key, _buffer(grad, "grad", False), grad.size), (grad,))

    def pull(self, key, out):
        """Fills out in place by wait(ticket)."""
        return self._hold(_lib().dlps_pull(self._live(), key, _buffer(out, "out", True), out.size), (out,))

    def pushpull(self, key, grad, out):
        """Pushes grad (from its memory) and fills out with the round's result by wait(ticket)."""
        g, o = _buffer(grad, "grad", False), _buffer(out, "out", True)
        if grad.size != out.size:
            raise ValueError("grad and out must have the same size")
        return self._hold(_lib().dlps_pushpull(self._live(), key, g, o, grad.size), (grad, out))

    def wait(self, ticket):
        """Blocks until the ticket's messages are answered; raises dlps.Error."""
        code = _lib().dlps_wait(self._live(), ticket)
        with self._lock:
            self._held.pop(ticket, None)  # the arrays may go now
        _check(code)

    def barrier(self):
        _check(_lib().dlps_barrier(self._live()))

    def checkpoint(self, name):
        _check(_lib().dlps_checkpoint(self._live(), name.encode()))

    def restore(self, name):
        _check(_lib().dlps_restore(self._live(), name.encode()))

    def close(self):
        """Closes the connections (after the job's last barrier)."""
        c, self._c = getattr(self, "_c", None), None
        if c:
            _lib().dlps_close(c)  # waits for what is in flight
        self._held = {}

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _live(self):
        if not self._c:
            raise ValueError("the client is closed")
        return self._c

    def _hold(self, ticket, arrays):
        with self._lock:
            self._held[ticket] = arrays
        return ticket


_report_socket = None


def report(step=None, **values):
    """Reports training metrics to this node's agent (docs/jobs.md, "Training metrics"): the step and any named
    scalars, e.g. report(step=120, loss=0.53, samples_per_second=1200.0). agentctl jobs shows the step and its
    age, /metrics the values. One datagram that never blocks: outside an agentctl job, or when the agent cannot
    take it now, the report is dropped. Returns whether it was sent."""
    global _report_socket
    path, job = os.environ.get("DLAGENT_METRICS_SOCKET", ""), os.environ.get("DLAGENT_JOB", "")
    if not path or not job:
        return False
    parts = ["job=" + job]
    if step is not None:
        parts.append("step=%d" % int(step))
    parts += ["%s=%r" % (name, float(value)) for name, value in values.items()]
    try:
        if _report_socket is None:
            _report_socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _report_socket.sendto(" ".join(parts).encode(), socket.MSG_DONTWAIT, "\0" + path[1:] if path.startswith("@") else path)
        return True
    except OSError:
        return False

