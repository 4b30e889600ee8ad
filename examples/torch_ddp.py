# A PyTorch job for `agentctl run --launcher torchrun`: DistributedDataParallel over gloo on every rank's own
# data; every rank prints the weights it ends with, which DDP keeps identical everywhere.
# Run: agentctl run --launcher torchrun -- python3 examples/torch_ddp.py
import torch
import torch.distributed as dist

dist.init_process_group("gloo")  # MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE come from the agent
torch.manual_seed(0)
model = torch.nn.Linear(8, 2)
ddp = torch.nn.parallel.DistributedDataParallel(model)
opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
data = torch.Generator().manual_seed(100 + dist.get_rank())  # each rank its own batches
for step in range(5):
    x, y = torch.randn(16, 8, generator=data), torch.randn(16, 2, generator=data)
    opt.zero_grad()
    ((ddp(x) - y) ** 2).mean().backward()
    opt.step()
weights = torch.cat([p.detach().flatten() for p in model.parameters()])
print("world", dist.get_world_size(), "weights", " ".join(f"{v:.6f}" for v in weights.tolist()), flush=True)
dist.destroy_process_group()
