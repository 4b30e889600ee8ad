"""dlps.ddp: PyTorch DistributedDataParallel with its gradients summed by the dlps shards (docs/ps.md, "PyTorch").

An unchanged DDP model trains through dlps by DDP's communication hook: every gradient bucket DDP hands over
is push-pulled through the job's shards, in place (a CPU tensor's memory is the numpy array dlps sends from and
receives into: no copy), as soon as DDP issues it, so the exchange of one bucket overlaps the backward pass
of the next. Each parameter is a dlps key, so DDP's rebuilding of its buckets after the first step changes
nothing on the servers.

    import torch.distributed as dist, dlps.ddp
    dist.init_process_group("gloo")     # DDP still needs its group: it broadcasts rank 0's weights at the start
    model = torch.nn.parallel.DistributedDataParallel(net)
    ps = dlps.ddp.register(model)       # gradients averaged by the shards instead of all-reduced
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ...  loss.backward(); opt.step()    # unchanged
    ps.close()                          # after the last step, on every rank

With the optimizer on the servers, the shards keep the weights and apply the update; the step copies them in:

    opt = dlps.ddp.ServerOptimizer(model, "sgd", lr=0.1, momentum=0.9)
    ...  opt.zero_grad(); loss.backward(); opt.step()
    opt.close()

`agentctl run --launcher dlps` sets what both need: DLPS_* for the client and torch's MASTER_ADDR, MASTER_PORT,
RANK and WORLD_SIZE for init_process_group(). Parameters must be float32 CPU tensors (torch.float32, the
default); DDP's buckets then are too.
"""
import queue
import threading

import numpy as np
import torch

from . import Client, Error

__all__ = ["register", "ServerOptimizer", "Exchange"]

_KEY_BASE = 1 << 40  # the hook's keys: the parameter's index above it, apart from keys a script picks itself


class Exchange:
    """The hook's state: the client, one key per trainable parameter, and the thread that completes buckets."""

    def __init__(self, model, client=None, optimizer="sum", key_base=_KEY_BASE, **hyper):
        if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            raise TypeError("dlps.ddp needs a torch.nn.parallel.DistributedDataParallel model, not %s" % type(model).__name__)
        self._params = [p for p in model.module.parameters() if p.requires_grad]
        for i, p in enumerate(self._params):  # before connecting: a refused model leaves the job's servers alone
            if p.dtype != torch.float32 or p.device.type != "cpu":
                raise TypeError("dlps.ddp: parameter %d is %s on %s; dlps exchanges float32 CPU tensors" % (i, p.dtype, p.device))
        self.client = client if client is not None else Client()
        self.server_side = optimizer != "sum"
        self._keys = {}
        self._key_base = key_base
        self._staged = {}
        workers = self.client.num_workers
        if "rescale" not in hyper:
            hyper["rescale"] = 1.0 / workers  # the mean of the workers' gradients, as DDP's all-reduce gives
        for i, p in enumerate(self._params):
            key = key_base + i
            self._keys[p] = key
            with torch.no_grad():
                initial = np.ascontiguousarray(p.detach().numpy().reshape(-1))
            # Collective: rank 0's values become the servers' weights (DDP broadcast the same at construction).
            self.client.init(key, initial, optimizer=optimizer, **hyper)
            if self.server_side:
                self._staged[p] = initial.copy()  # the weights as of the last exchange
        self.buckets = 0  # buckets exchanged so far
        self._fresh = False  # an exchange since the last load()
        self._queue = queue.Queue()
        self._failed = None
        self._waiter = threading.Thread(target=self._complete, name="dlps-ddp", daemon=True)
        self._waiter.start()
        model.register_comm_hook(self, _hook)

    def _exchange(self, bucket):
        buf = bucket.buffer()
        if buf.dtype != torch.float32 or buf.device.type != "cpu" or not buf.is_contiguous():
            raise TypeError("dlps.ddp: DDP gave a %s bucket on %s; dlps exchanges contiguous float32 CPU tensors" % (buf.dtype, buf.device))
        flat = buf.numpy()  # the bucket's memory itself
        base = buf.data_ptr()
        tickets = []
        for p, g in zip(bucket.parameters(), bucket.gradients()):
            offset, n = (g.data_ptr() - base) // 4, g.numel()
            if g.data_ptr() < base or offset + n > flat.size:
                raise RuntimeError("dlps.ddp: a gradient of parameter %d lies outside its bucket's buffer: this PyTorch (%s) lays out "
                                   "DDP's buckets in a way dlps.ddp does not know; train without dlps.ddp.register (DDP's own "
                                   "all-reduce)" % (self._keys[p] - self._key_base, torch.__version__))
            grad = flat[offset:offset + n]
            # In place: the reply to the pull comes only once the push has been sent, so grad and out may share memory.
            out = self._staged[p] if self.server_side else grad
            tickets.append(self.client.pushpull(self._keys[p], grad, out))
        future = torch.futures.Future()
        self._queue.put((tickets, future, buf))
        self.buckets += 1
        self._fresh = True
        return future

    def _complete(self):
        """Waits for each bucket's tickets in the order DDP issued them and completes its future."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            tickets, future, buf = item
            error = None
            for t in tickets:  # wait for every ticket, even past a failure, so no array is written after
                try:
                    self.client.wait(t)
                except Error as e:
                    error = error or e
            if error is not None:
                self._failed = error
                future.set_exception(error)
            else:
                future.set_result(buf)

    def load(self):
        """With the optimizer on the servers: copies the weights of the last exchange into the parameters; without
        an exchange since the last load (no backward, or DDP's no_sync()), the parameters stay as they are."""
        if self._failed is not None:
            raise self._failed
        if not self._fresh:
            return
        self._fresh = False
        with torch.no_grad():
            for p, w in self._staged.items():
                p.view(-1).copy_(torch.from_numpy(w))

    def close(self):
        """Every rank calls it after its last step: a barrier, then the client closes."""
        if self._waiter.is_alive():
            self._queue.put(None)
            self._waiter.join()
        try:
            self.client.barrier()
        finally:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hook(state, bucket):
    return state._exchange(bucket)


def register(model, client=None, key_base=_KEY_BASE):
    """Makes DDP average its gradients through the dlps shards; the optimizer stays the caller's. Collective:
    every rank calls it after constructing the DDP model. client defaults to dlps.Client() (DLPS_* environment)."""
    return Exchange(model, client, "sum", key_base)


class ServerOptimizer:
    """The optimizer on the servers (kind "sgd" or "adam", dlps.Client.init's arguments, MXNet's definitions):
    step() loads the weights the shards computed from this step's averaged gradients. The parameters' .grad
    keep each rank's own gradient. Collective to construct and to close()."""

    def __init__(self, model, kind="sgd", client=None, key_base=_KEY_BASE, **hyper):
        if kind == "sum":
            raise ValueError('kind "sum" leaves the update to the workers: use dlps.ddp.register with a torch optimizer')
        self._model = model
        self.exchange = Exchange(model, client, kind, key_base, **hyper)

    def zero_grad(self, set_to_none=True):
        self._model.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.exchange.load()

    def close(self):
        self.exchange.close()
