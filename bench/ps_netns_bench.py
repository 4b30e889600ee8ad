#!/usr/bin/python3
"""ps_netns_bench: one synchronous step of dlps against gloo all-reduce across emulated NICs (docs/ps.md, "Across nodes").

Every node is a network namespace whose veth link is limited to --rate in both directions (scripts/netns shape:
a token bucket on what it sends and on what it receives). For N workers and a gradient of M MB it times, in
the same run and over the same links:

  tcp             raw TCP: every node sends M to the next and receives M from the previous at once; it shows
                  whether the links or this machine's cores are the bottleneck (ratio to its bound ~1: links)
  gloo            torch.distributed all_reduce of the same M bytes (float32), gloo, one rank a node
  dlps shard/node dlps pushpull of M through a shard on every worker node (the agent's default placement)
  dlps N servers  ... through N server-only nodes (cluster.role = "server"), and through N/2 of them
  ddp ...         a training step of a DistributedDataParallel model of --ddp-mb MB at N = --ddp-workers:
                  DDP's own gloo all-reduce, dlps.ddp with a shard a node, and with N server-only nodes

and prints each step's time, its bandwidth bound (B = --rate) and its ratio to the bound and to gloo:

  ring all-reduce, shard a node   2M(N-1)/(N B)     every node sends and receives that much
  S server-only nodes             max(M/B, N M/(S B))  a worker sends M and receives M; a server N M/S
  raw TCP ring shift              M/B

It also counts minor page faults per timed step in every worker and every dlps-server, and runs
`dlps-train --verify` (4 workers, every placement) whose difference must be 0. As root, with Debian's python3
(python3-torch, python3-numpy) and a default build:

  bench/ps_netns_bench.py --build build [--rate 200mbit] [--workers 2,4,8] [--sizes 4,40,400] [--out DIR]

--out gets results.json, table.md and steps.png (python3-matplotlib). The namespaces are removed at exit.
"""
import argparse
import json
import os
import queue
import random
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NETNS = os.path.join(HERE, "..", "scripts", "netns")
NAME, SUBNET = "psb", 77  # namespaces psb-0 .. psb-K and psb-s (--netns); addresses 10.77.0.K+1
PS_PORT = 7070


# ---- ranks: run inside a namespace by the driver; print "ready" after a warm-up step, wait for "go" on stdin,
# ---- time --steps steps and print one JSON line

def rank_main(a):
    rank, n, nbytes = a.rank, a.n, a.mb * 1_000_000
    floats = nbytes // 4
    if a.kind == "serve":
        return mesh_serve(a.ips, floats * 4 // a.parts)
    if a.kind == "tcp":
        step = tcp_ring(rank, n, a.ips.split(","), floats * 4)
    elif a.kind == "mesh":
        step = mesh_worker(a.ips.split(","), floats * 4 // a.parts)
    elif a.kind == "gloo":
        step = gloo_allreduce(rank, n, a.ips.split(",")[0], a.port, floats)
    elif a.kind == "dlps":
        step = dlps_pushpull(rank, n, floats)
    else:
        step = ddp_step(rank, n, a.ips.split(",")[0], a.port, a.kind, floats)
    for _ in range(a.warmup):  # connections made, buffers and the servers' keys allocated
        step()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("rank %d: no go from the driver" % rank)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.monotonic()
    for _ in range(a.steps):
        step()
    seconds = (time.monotonic() - started) / a.steps
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"rank": rank, "step_s": seconds, "faults_per_step": faults / a.steps}), flush=True)


def tcp_ring(rank, n, ips, nbytes):
    listener = socket.create_server((ips[rank], PS_PORT + 1))
    for attempt in range(100):  # the next node may not listen yet: up to ~30 s
        try:
            out = socket.create_connection((ips[(rank + 1) % n], PS_PORT + 1), timeout=10)
            break
        except ConnectionRefusedError:
            time.sleep(0.05 + 0.25 * random.random())
    else:
        raise SystemExit("rank %d: the next node never listened" % rank)
    inbound, _ = listener.accept()
    inbound.settimeout(300)
    out.settimeout(300)
    payload, sink = bytearray(nbytes), bytearray(nbytes)
    view = memoryview(sink)

    def receive():
        got = 0
        while got < nbytes:
            k = inbound.recv_into(view[got:], nbytes - got)
            if k == 0:
                raise ConnectionError("rank %d: the previous node closed" % rank)
            got += k

    def step():
        t = threading.Thread(target=receive)
        t.start()
        out.sendall(payload)
        t.join()
    return step


def recv_exact(sock, view):
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("the peer closed mid-step")
        got += k


def mesh_worker(servers, part):
    """dlps's traffic without its rounds: to every server at once, part bytes out and part bytes back."""
    conns = []
    for ip in servers:
        for attempt in range(100):
            try:
                conns.append(socket.create_connection((ip, PS_PORT + 2), timeout=300))
                break
            except ConnectionRefusedError:
                time.sleep(0.05 + 0.25 * random.random())
        else:
            raise SystemExit("mesh: %s never listened" % ip)
    payload, sinks = bytearray(part), [memoryview(bytearray(part)) for _ in conns]

    def step():
        threads = [threading.Thread(target=c.sendall, args=(payload,)) for c in conns] + [
            threading.Thread(target=recv_exact, args=(c, v)) for c, v in zip(conns, sinks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return step


def mesh_serve(ip, part):
    """A server of mesh_worker's: each step of a connection starts with the worker's first bytes, and part
    bytes go back while the rest of the worker's arrive."""
    listener = socket.create_server((ip, PS_PORT + 2), backlog=64)
    print("listening on %s:%d" % (ip, PS_PORT + 2), flush=True)

    def serve(c):
        payload, sink = bytearray(part), memoryview(bytearray(part))
        with c:
            while True:
                first = c.recv_into(sink)
                if first == 0:
                    return
                t = threading.Thread(target=c.sendall, args=(payload,))
                t.start()
                recv_exact(c, sink[first:])
                t.join()
    while True:
        c, _ = listener.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def gloo_allreduce(rank, n, master, port, floats):
    import torch
    import torch.distributed as dist
    init_gloo(rank, n, master, port)
    tensor = torch.ones(floats, dtype=torch.float32)

    def step():
        dist.all_reduce(tensor)
        tensor.fill_(1.0)
    return step


def init_gloo(rank, n, master, port):
    import datetime
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="tcp://%s:%d" % (master, port), rank=rank, world_size=n,
                            timeout=datetime.timedelta(seconds=600))


def dlps_pushpull(rank, n, floats):
    import numpy as np
    import dlps
    c = dlps.Client(connect_timeout=60, deadline=600)
    c.init(1, np.zeros(floats, np.float32), optimizer="sum")
    grad, out = np.full(floats, rank + 1, np.float32), np.empty(floats, np.float32)
    expected = n * (n + 1) / 2

    def step():
        c.wait(c.pushpull(1, grad, out))
        for i in (0, floats // 2, floats - 1):  # every shard's slice summed every rank's push
            if out[i] != expected:
                raise SystemExit("rank %d: out[%d] = %g, not the sum %g" % (rank, i, out[i], expected))
    return step


def ddp_step(rank, n, master, port, kind, floats):
    import torch
    init_gloo(rank, n, master, port)
    side, layers = DDP_SIDE, ddp_layers(floats * 4 // 1_000_000)
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Linear(side, side) for _ in range(layers)])
    model = torch.nn.parallel.DistributedDataParallel(net)
    if kind == "ddp-dlps":
        import dlps.ddp
        dlps.ddp.register(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(16, side, generator=torch.Generator().manual_seed(rank))

    def step():
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return step


DDP_SIDE = 1024


def ddp_layers(mb):
    return max(1, mb * 1_000_000 // (4 * DDP_SIDE * DDP_SIDE))


def ddp_bytes(mb):
    return ddp_layers(mb) * (DDP_SIDE * DDP_SIDE + DDP_SIDE) * 4


# ---- the driver

class Procs:
    """Processes in namespaces, each line of their stdout queued; stderr to a log file each."""

    def __init__(self, logdir):
        self.logdir, self.procs, self.lines = logdir, [], queue.Queue()

    def start(self, ns, argv, env, tag):
        log = open(os.path.join(self.logdir, tag + ".log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=log, text=True)
        p.tag, p.log = tag, log.name
        self.procs.append(p)
        threading.Thread(target=lambda: [self.lines.put((p, line)) for line in p.stdout] + [self.lines.put((p, None))],
                         daemon=True).start()
        return p

    def expect(self, procs, prefix, timeout):
        """Each of procs' next line starting with prefix, in procs' order; raises naming the first that fails."""
        got, deadline = {}, time.monotonic() + timeout
        while len(got) < len(procs):
            try:
                p, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                missing = [q.tag for q in procs if q not in got]
                raise RuntimeError("no '%s' from %s within %.0f s (logs in %s)" % (prefix, ", ".join(missing), timeout, self.logdir))
            if p not in procs or p in got:
                continue  # a stopped run's last lines, or the end of one that has answered
            if line is None:
                p.wait()
                raise RuntimeError("%s exited (%s) before '%s': %s" % (p.tag, p.returncode, prefix, tail(p.log)))
            if line.startswith(prefix):
                got[p] = line.strip()
        return [got[p] for p in procs]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def tail(path):
    with open(path) as f:
        return f.read()[-600:].strip() or "(no output)"


def minflt(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rfind(")") + 2:].split()[7])


def node_ip(k):
    return "10.%d.%d.%d" % (SUBNET, k // 250, k % 250 + 1)


def run(args, procs, kind, n, mb, servers, port, steps):
    """One placement of kind (tcp, mesh, gloo, dlps, ddp-gloo, ddp-dlps, verify) with N workers in namespaces
    0 .. n-1 and servers = None (none), 0 (one on every worker node) or S (server-only, namespaces n .. n+S-1).
    Returns the step's seconds (the slowest rank's mean), the workers' and servers' most minor faults a step,
    the cores' busy fraction and the links' drops a step; verify returns (difference, ok)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(args.build, "python"), OMP_NUM_THREADS="1",
               GLOO_SOCKET_IFNAME="eth0")
    server_procs = []
    if servers is not None:
        hosts = list(range(n)) if servers == 0 else list(range(n, n + servers))
        for k in hosts:
            argv = [os.path.join(args.build, "agent", "ps", "dlps-server"), "--listen", "%s:%d" % (node_ip(k), PS_PORT),
                    "--workers", str(n)]
            if kind == "mesh":
                argv = [sys.executable, os.path.abspath(__file__), "rank", "--kind", "serve", "--ips", node_ip(k),
                        "--parts", str(len(hosts)), "--mb", str(mb)]
            server_procs.append(procs.start("%s-%d" % (NAME, k), argv, env, "server-%d" % k))
        procs.expect(server_procs, "listening on", 30)
        env["DLPS_SERVERS"] = ",".join("%s:%d" % (node_ip(k), PS_PORT) for k in hosts)
        env["DLPS_NUM_WORKERS"] = str(n)
    ips = ",".join(node_ip(k) for k in range(n))
    parts = 1
    if kind == "mesh":
        ips, parts = ",".join(node_ip(k) for k in hosts), len(hosts)
    ranks = []
    for r in range(n):
        argv = [sys.executable, os.path.abspath(__file__), "rank", "--kind", kind, "--rank", str(r), "--n", str(n),
                "--mb", str(mb), "--steps", str(steps), "--ips", ips, "--port", str(port), "--parts", str(parts),
                "--warmup", str(args.warmup)]
        if kind == "verify":
            argv = [os.path.join(args.build, "agent", "ps", "dlps-train"), "--epochs", "1", "--progress", "never"] + (
                ["--verify"] if r == 0 else [])
        ranks.append(procs.start("%s-%d" % (NAME, r), argv, dict(env, DLPS_RANK=str(r)), "%s-%d" % (kind, r)))
    budget = 120 + 20 * (steps + args.warmup) * mb * 1e6 / rate_bytes(args.rate)
    if kind == "verify":
        line = procs.expect(ranks[:1], "verify:", budget)[0]
        procs.stop()
        return float(line.split(" is ")[1].split()[0]), line.endswith("ok")
    procs.expect(ranks, "ready", budget)
    before, cpu, dropped = [minflt(p.pid) for p in server_procs], cpu_times(), drops()
    for p in ranks:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(line) for line in procs.expect(ranks, "{", budget)]
    busy, total = [after - then for after, then in zip(cpu_times(), cpu)]
    dropped = (drops() - dropped) / steps
    server_faults = max([(minflt(p.pid) - b) / steps for p, b in zip(server_procs, before)], default=0)
    procs.stop()
    return (max(r["step_s"] for r in results), max(r["faults_per_step"] for r in results), server_faults, busy / total, dropped)


def drops():
    """Packets the links' token buckets dropped so far (every node's eth0 and every bridge port)."""
    total = 0
    for ns in [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()]:
        if ns.startswith(NAME + "-"):
            out = subprocess.run(["tc", "-s", "-j", "-n", ns, "qdisc", "show"], capture_output=True, text=True).stdout
            total += sum(q.get("drops", 0) for q in json.loads(out or "[]") if q.get("kind") == "tbf")
    return total


def cpu_times():
    """This machine's busy and total CPU time so far (jiffies, all cores): busy/total over a run is how much of
    the cores it used."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def rate_bytes(rate):
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, scale in units.items():
        if rate.endswith(unit):
            return float(rate[:-len(unit)]) * scale / 8
    raise SystemExit("--rate must be like 200mbit or 1gbit, got " + rate)


def bound(placement, n, nbytes, b, servers=0):
    """The step's time if every link it loads ran at b bytes/s each way the whole step (module docstring)."""
    if placement == "tcp":
        return nbytes / b
    if servers:
        return max(nbytes / b, n * nbytes / (servers * b))
    return 2 * nbytes * (n - 1) / (n * b)  # ring all-reduce; a shard on every worker node


def main():
    global NAME
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", required=True, help="the default build directory (dlps-server, dlps-train, python/dlps)")
    p.add_argument("--rate", default="200mbit", help="every node's link, each direction (tc units: 200mbit, 1gbit)")
    p.add_argument("--workers", default="2,4,8", help="worker counts N")
    p.add_argument("--sizes", default="4,40,400", help="gradient sizes M in MB")
    p.add_argument("--steps", type=int, default=3, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=1, help="steps before the timed ones (more: the page faults of a steady state)")
    p.add_argument("--ddp-workers", type=int, default=4, help="N for the DDP rows (0: none)")
    p.add_argument("--ddp-mb", type=int, default=16, help="the DDP model's size in MB (1024 x 1024 layers)")
    p.add_argument("--netns", default=NAME, help="the namespaces' name (NAME-0 ..., NAME-s), left over ones removed first")
    p.add_argument("--only", default="", help="run only the placements whose label contains this (tcp, gloo, dlps, servers, ...)")
    p.add_argument("--out", default="ps_netns_bench", help="directory for results.json, table.md, steps.png and logs")
    args = p.parse_args()
    NAME = args.netns
    args.build = os.path.abspath(args.build)
    workers = [int(x) for x in args.workers.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    b = rate_bytes(args.rate)
    if os.geteuid() != 0:
        raise SystemExit("ps_netns_bench: needs root (network namespaces and tc)")
    for tool in ("agent/ps/dlps-server", "agent/ps/dlps-train", "python/dlps/libdlps.so.0"):
        if not os.path.exists(os.path.join(args.build, tool)):
            raise SystemExit("ps_netns_bench: no %s in %s: build the default preset first" % (tool, args.build))
    logs = os.path.join(args.out, "logs")
    os.makedirs(logs, exist_ok=True)
    nodes = max(workers + [args.ddp_workers, 4]) * 2  # 4: dlps-train --verify
    subprocess.run([NETNS, "down", NAME], check=True)
    subprocess.run([NETNS, "up", NAME, str(SUBNET), str(nodes)], check=True)
    procs = Procs(logs)
    rows, port = [], 29500
    try:
        subprocess.run([NETNS, "shape", NAME, args.rate], check=True)
        for n in workers:
            for mb in sizes:
                nbytes = mb * 1_000_000
                plan = [("tcp", "tcp", None), ("gloo", "gloo", None), ("dlps shard/node", "dlps", 0),
                        ("dlps %d servers" % n, "dlps", n)]
                if n // 2 >= 1:
                    plan.append(("dlps %d servers" % (n // 2), "dlps", n // 2))
                measured = {}
                plan = [x for x in plan if args.only in x[0] or x[1] in ("tcp", "gloo")]
                for label, kind, servers in plan:
                    same = None
                    if kind == "dlps":  # raw TCP moving this placement's bytes between the same nodes first
                        port += 1
                        same = run(args, procs, "mesh", n, mb, servers, port, args.steps)[0]
                    port += 1
                    seconds, wf, sf, cpu, dropped = run(args, procs, kind, n, mb, servers, port, args.steps)
                    measured[label] = seconds
                    row = {"n": n, "mb": mb, "placement": label, "step_s": seconds, "tcp_same_s": same, "cpu": cpu, "drops": dropped,
                           "bound_s": bound(kind, n, nbytes, b, servers or 0), "worker_faults": wf,
                           "server_faults": sf if servers is not None else None}
                    rows.append(row)
                    print(fmt_row(row, measured), flush=True)
                for row in rows:
                    if row["n"] == n and row["mb"] == mb:
                        row["vs_gloo"] = row["step_s"] / measured["gloo"]
        ddp = []
        if args.ddp_workers:
            n, mb = args.ddp_workers, args.ddp_mb
            for label, kind, servers in [("ddp gloo", "ddp-gloo", None), ("ddp dlps shard/node", "ddp-dlps", 0),
                                         ("ddp dlps %d servers" % n, "ddp-dlps", n)]:
                port += 1
                seconds, wf, sf, cpu, dropped = run(args, procs, kind, n, mb, servers, port, args.steps)
                ddp.append({"n": n, "mb": ddp_bytes(mb) / 1e6, "placement": label, "step_s": seconds, "tcp_same_s": None, "cpu": cpu, "drops": dropped,
                            "bound_s": bound(kind, n, ddp_bytes(mb), b, servers or 0), "worker_faults": wf,
                            "server_faults": sf if servers is not None else None})
            for row in ddp:
                row["vs_gloo"] = row["step_s"] / ddp[0]["step_s"]
                print(fmt_row(row, {}), flush=True)
        verify = []
        n = 4
        for label, servers in [("shard/node", 0), ("%d servers" % n, n), ("%d servers" % (n // 2), n // 2)]:
            difference, ok = run(args, procs, "verify", n, 0, servers, 0, 0)
            verify.append({"placement": label, "difference": difference, "ok": ok})
            print("dlps-train --verify, %d workers, %s: difference %g" % (n, label, difference), flush=True)
    finally:
        procs.stop()
        subprocess.run([NETNS, "down", NAME])
    write(args, rows, ddp, verify, b)
    if not all(v["ok"] for v in verify):
        raise SystemExit("ps_netns_bench: dlps-train --verify differs in a placement")


def fmt_row(row, measured):
    return "N=%d M=%4d MB %-18s %8.3f s a step  cores %3.0f%%  drops %6.0f  bound %8.3f s  %.2fx bound%s%s" % (
        row["n"], row["mb"], row["placement"], row["step_s"], row["cpu"] * 100, row["drops"], row["bound_s"], row["step_s"] / row["bound_s"],
        "  %.2fx gloo" % (row["step_s"] / measured["gloo"]) if "gloo" in measured else "",
        "  %.2fx raw TCP of its bytes (%.2fx bound)" % (row["step_s"] / row["tcp_same_s"], row["tcp_same_s"] / row["bound_s"])
        if row.get("tcp_same_s") else "")


def write(args, rows, ddp, verify, b):
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rate": args.rate, "steps": args.steps, "rows": rows, "ddp": ddp, "verify": verify}, f, indent=1)
    lines = ["| N | M (MB) | placement | step (s) | bound (s) | / bound | / gloo | raw TCP, same bytes: / bound | faults/step (workers, servers) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %d | %d | %s | %.3f | %.3f | %.2f | %.2f | %s | %.3g, %s |" % (
            r["n"], r["mb"], r["placement"], r["step_s"], r["bound_s"], r["step_s"] / r["bound_s"], r["vs_gloo"],
            "%.2f" % (r["tcp_same_s"] / r["bound_s"]) if r["tcp_same_s"] else "-", r["worker_faults"],
            "-" if r["server_faults"] is None else "%.3g" % r["server_faults"]))
    if ddp:
        lines += ["", "| N | model (MB) | DDP step through | step (s) | bound (s) | / bound | / gloo | faults/step (workers, servers) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in ddp:
            lines.append("| %d | %.1f | %s | %.3f | %.3f | %.2f | %.2f | %g, %s |" % (
                r["n"], r["mb"], r["placement"][4:], r["step_s"], r["bound_s"], r["step_s"] / r["bound_s"],
                r["vs_gloo"], r["worker_faults"], "-" if r["server_faults"] is None else "%g" % r["server_faults"]))
    if verify:
        lines += ["", "dlps-train --verify (4 workers, 1 epoch): " + ", ".join(
            "%s %g%s" % (v["placement"], v["difference"], "" if v["ok"] else " FAILED") for v in verify)]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text)
    print("\n" + text)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no steps.png: python3-matplotlib is not installed")
        return
    sizes = sorted({r["mb"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, mb in zip(axes[0], sizes):
        for label in dict.fromkeys(canonical(r) for r in rows):
            pts = [(r["n"], r["step_s"]) for r in rows if r["mb"] == mb and canonical(r) == label]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_title("%d MB, %s links" % (mb, args.rate))
        ax.set_xlabel("workers N")
        ax.set_ylabel("seconds a step")
        ax.set_xticks(sorted({r["n"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "steps.png"), dpi=100)
    print("wrote", os.path.join(args.out, "steps.png"))


def canonical(r):
    p = r["placement"]
    if p.endswith(" servers"):
        s = int(p.split()[1])
        return "dlps N servers" if s == r["n"] else "dlps N/2 servers"
    return p


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "rank":
        q = argparse.ArgumentParser()
        for flag, typ, default in [("--kind", str, None), ("--mb", int, None), ("--ips", str, None), ("--rank", int, 0),
                                   ("--n", int, 1), ("--steps", int, 0), ("--port", int, 0), ("--parts", int, 1),
                                   ("--warmup", int, 1)]:
            q.add_argument(flag, type=typ, required=default is None, default=default)
        rank_main(q.parse_args(sys.argv[2:]))
    else:
        main()
