# A PyTorch job for `agentctl run --launcher torchrun`: DistributedDataParallel over gloo on every rank's own
# data; every rank prints the weights it ends with, which DDP keeps identical everywhere.
# Run: agentctl run --launcher torchrun -- python3 examples/torch_ddp.py
#
# It survives restarts (agentctl run --restarts N): rank 0 saves a checkpoint in DLAGENT_JOB_CHECKPOINT_DIR
# (shared storage, the same directory for every attempt) after each step, written to a temporary file and
# renamed over the last one, so that a crash never leaves half a checkpoint. Every rank of a new attempt
# resumes from it, on however many nodes the attempt has.
#
# Rank 0 reports each step, its loss and throughput to its agent (DLAGENT_METRICS_SOCKET, docs/jobs.md
# "Training metrics"): agentctl jobs shows the step, /metrics the loss. report() below is the whole protocol;
# the dlps Python package ships the same as dlps.report().
import argparse
import os
import socket
import time

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=5)
parser.add_argument("--pause", type=float, default=0.0, help="seconds to wait after each step (to stop a node mid-training)")
args = parser.parse_args()

_metrics = os.environ.get("DLAGENT_METRICS_SOCKET", "")
_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if _metrics else None


def report(step, **values):
    """One datagram "job=J step=N name=value ...", never blocking: a report the agent cannot take is dropped."""
    if not _sock:
        return
    text = " ".join([f"job={os.environ['DLAGENT_JOB']}", f"step={step}"] + [f"{k}={float(v)!r}" for k, v in values.items()])
    try:
        _sock.sendto(text.encode(), socket.MSG_DONTWAIT, "\0" + _metrics[1:] if _metrics.startswith("@") else _metrics)
    except OSError:
        pass


dist.init_process_group("gloo")  # MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE come from the agent
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.Linear(8, 2)
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)

checkpoint_dir = os.environ.get("DLAGENT_JOB_CHECKPOINT_DIR", "")
checkpoint = os.path.join(checkpoint_dir, "torch_ddp.pt") if checkpoint_dir else ""
step = 0
if checkpoint and os.path.exists(checkpoint):
    saved = torch.load(checkpoint)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    step = saved["step"]
    if rank == 0:
        print(f"attempt {os.environ.get('DLAGENT_RESTART_COUNT', '0')}: resumed at step {step} on {world} ranks", flush=True)

target = torch.nn.Linear(8, 2)  # what the model learns: the same on every rank
torch.nn.init.constant_(target.weight, 0.5)
torch.nn.init.constant_(target.bias, -0.25)
loss = torch.tensor(0.0)
started = time.monotonic()
while step < args.steps:
    data = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own batch of each step
    x = torch.randn(16, 8, generator=data)
    y = target(x).detach()
    opt.zero_grad()
    loss = ((ddp(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    step += 1
    if rank == 0:
        report(step, loss=loss.item(), samples_per_second=16 * world * step / max(time.monotonic() - started, 1e-9))
    if checkpoint and rank == 0:
        tmp = f"{checkpoint}.{os.getpid()}.tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
        os.replace(tmp, checkpoint)
    if args.pause:
        time.sleep(args.pause)

weights = torch.cat([p.detach().flatten() for p in model.parameters()])
print("world", world, "weights", " ".join(f"{v:.6f}" for v in weights.tolist()), flush=True)
print("world", world, "step", step, "loss", f"{loss.item():.6f}", flush=True)
dist.destroy_process_group()
