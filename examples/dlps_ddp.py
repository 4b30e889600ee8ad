# PyTorch DistributedDataParallel trained through the dlps shards (dlps.ddp, docs/ps.md "PyTorch").
# Run: agentctl run --launcher dlps --per-node 2 -- python3 examples/dlps_ddp.py [--optimizer sgd] [--compare]
#
# Each rank trains a small MLP on its own batches. --optimizer sum (the default) averages the gradients on the
# shards and steps a local torch.optim.SGD; sgd runs the same update on the shards (dlps.ddp.ServerOptimizer).
# --compare also trains the same model from the same seed with DDP's own gloo all-reduce and a local SGD, and
# fails unless both end with the same weights (float32 tolerance). Small buckets (--bucket-kb) make DDP hand
# over several per step, so the test sees them overlap and be rebuilt after the first step.
import argparse
import os
import sys
import time

import torch
import torch.distributed as dist

import dlps
import dlps.ddp

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=20)
parser.add_argument("--optimizer", choices=["sum", "sgd"], default="sum", help="sum: a local optimizer steps; sgd: the shards step")
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--bucket-kb", type=float, default=1.0, help="DDP's bucket size (bucket_cap_mb, in KiB)")
parser.add_argument("--compare", action="store_true", help="also train with gloo all-reduce and compare the weights")
parser.add_argument("--tolerance", type=float, default=1e-5, help="largest difference allowed, relative to the largest weight")
args = parser.parse_args()

dist.init_process_group("gloo")  # MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE come from the agent
rank, world = dist.get_rank(), dist.get_world_size()


def make_model():
    torch.manual_seed(0)
    # 330,000 weights: the 512 x 512 layer is cut across the shards (docs/ps.md, "Model"); DDP's first bucket
    # holds at most 1 MiB, later ones --bucket-kb, so a step hands DDP's hook 3 buckets.
    net = torch.nn.Sequential(torch.nn.Linear(128, 512), torch.nn.Tanh(), torch.nn.Linear(512, 512), torch.nn.Tanh(), torch.nn.Linear(512, 4))
    return torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=args.bucket_kb / 1024)


def batch(step):
    g = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own batch of each step
    x = torch.randn(32, 128, generator=g)
    return x, torch.sin(x[:, :4] * 2) + x[:, 4:8] * 0.5


def train(model, opt):
    loss = torch.tensor(0.0)
    for step in range(args.steps):
        x, y = batch(step)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        if rank == 0 and model is through:
            dlps.report(step + 1, loss=loss.item())
    return loss.item()


through = make_model()
started = time.monotonic()
if args.optimizer == "sum":
    exchange = dlps.ddp.register(through)
    loss = train(through, torch.optim.SGD(through.parameters(), lr=args.lr, momentum=args.momentum))
else:
    opt = dlps.ddp.ServerOptimizer(through, "sgd", lr=args.lr, momentum=args.momentum)
    exchange = opt.exchange
    loss = train(through, opt)
seconds = time.monotonic() - started
exchange.close()
weights = torch.cat([p.detach().reshape(-1) for p in through.module.parameters()])
print(f"rank {rank} of {world}: {args.steps} steps through dlps ({args.optimizer}), {exchange.buckets} buckets, "
      f"loss {loss:.6f}, {seconds / args.steps * 1000:.1f} ms a step", flush=True)

if args.compare:
    reference = make_model()  # DDP's default hook: gloo all-reduce, averaged
    started = time.monotonic()
    train(reference, torch.optim.SGD(reference.parameters(), lr=args.lr, momentum=args.momentum))
    gloo_seconds = time.monotonic() - started
    expected = torch.cat([p.detach().reshape(-1) for p in reference.module.parameters()])
    moved = (expected - torch.cat([p.detach().reshape(-1) for p in make_model().module.parameters()])).abs().max().item()
    difference = (weights - expected).abs().max().item()
    scale = expected.abs().max().item()
    ok = difference <= args.tolerance * scale and moved > 0
    print(f"rank {rank}: max |dlps - gloo| = {difference:.3g} over {weights.numel()} weights "
          f"(largest {scale:.3g}, training moved them by up to {moved:.3g}): {'same' if ok else 'DIFFERENT'}; "
          f"gloo all-reduce {gloo_seconds / args.steps * 1000:.1f} ms a step", flush=True)
    if not ok:
        sys.exit(1)
dist.destroy_process_group()
