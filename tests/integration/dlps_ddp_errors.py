"""dlps.ddp's edges, on one dlps-server and two ranks of this machine (gloo over 127.0.0.1): what it refuses, and
ServerOptimizer.step() without an exchange since the last one. Run by dlps_ddp_test.sh with DLPS_SERVERS,
DLPS_NUM_WORKERS=2, DLPS_RANK, MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE set."""
import sys

import torch
import torch.distributed as dist

import dlps.ddp

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
    print(("ok: " if ok else "FAILED: ") + what, flush=True)


dist.init_process_group("gloo")
rank = dist.get_rank()

# A model that is not DDP, and a parameter dlps cannot carry, are refused by name.
try:
    dlps.ddp.register(torch.nn.Linear(2, 2))
    check(False, "a plain module is refused")
except TypeError as e:
    check("DistributedDataParallel" in str(e), "a plain module is refused: " + str(e))
double = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2).double())
try:
    dlps.ddp.register(double)
    check(False, "a float64 parameter is refused")
except TypeError as e:
    check("torch.float64" in str(e) and "float32 CPU" in str(e), "a float64 parameter is refused: " + str(e))
try:
    dlps.ddp.ServerOptimizer(double, "sum")
    check(False, "a ServerOptimizer of kind sum is refused")
except ValueError as e:
    check("dlps.ddp.register" in str(e), "a ServerOptimizer of kind sum is refused: " + str(e))

# SGD on the server: a step moves the weights the same on both ranks; a step without an exchange since
# (no backward) leaves them as they are.
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = dlps.ddp.ServerOptimizer(model, "sgd", lr=0.5)
before = [p.detach().clone() for p in model.parameters()]
opt.step()
check(all(torch.equal(a, p) for a, p in zip(before, model.parameters())), "a step before any backward changes nothing")
x = torch.full((1, 4), float(rank + 1))
model(x).sum().backward()
opt.step()
after = [p.detach().clone() for p in model.parameters()]
# The mean gradient of the weight is the mean input, 1.5 everywhere; of the bias 1.
expected = [before[0] - 0.5 * 1.5, before[1] - 0.5]
check(all(torch.allclose(a, e, atol=1e-6) for a, e in zip(after, expected)), f"SGD on the server gives the mean's step: {after} vs {expected}")
opt.step()
check(all(torch.equal(a, p) for a, p in zip(after, model.parameters())), "a second step without a backward changes nothing")
opt.close()
dist.destroy_process_group()
sys.exit(1 if failures else 0)
