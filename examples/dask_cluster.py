# A Dask job for `agentctl run --launcher dask`: the agent starts a scheduler on the first node and a worker
# on every node, and runs this script on the first node with DASK_SCHEDULER_ADDRESS set. It sends one task
# to every worker process and prints where they ran. The workers and the scheduler stop when it ends.
# Run: agentctl run --launcher dask --per-node 2 -- python3 examples/dask_cluster.py
import os

from dask.distributed import Client

client = Client()  # the address comes from DASK_SCHEDULER_ADDRESS
client.wait_for_workers(int(os.environ["DLAGENT_DASK_WORKERS"]), timeout=60)  # every node's worker processes
workers = client.scheduler_info()["workers"]


def where(i):
    return int(os.environ["DLAGENT_NODE_RANK"]), i * i


futures = [client.submit(where, i, workers=[addr], pure=False) for i, addr in enumerate(sorted(workers))]
results = client.gather(futures)
print(f"{len(workers)} workers on {len({w['host'] for w in workers.values()})} nodes", flush=True)
print("tasks ran on nodes", " ".join(str(n) for n in sorted({node for node, _ in results})), flush=True)
print("sum of squares", sum(sq for _, sq in results), flush=True)
client.close()
