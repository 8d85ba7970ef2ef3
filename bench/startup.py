"""Start to first 200: how long a server takes from exec to answering its first request.

Used by bench/startup.sh. For each round and each server (interleaved, so machine noise hits
both alike) it starts the server in a process group of its own, connects to its address every
millisecond until a GET / answers 200, records the time since the exec, and stops the group.
Prints one line per server: median, min and max in milliseconds over the rounds, and the
median CPU time the server's processes had used by then (user + system of the server and its
descendants, read from /proc at the first 200): on a shared machine the CPU time moves less than the wall
time.
"""

import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_200(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            ok = conn.getresponse().status == 200
            conn.close()
            if ok:
                return True
        except OSError:
            pass
        time.sleep(0.001)
    return False


def tree_cpu_ms(root: int) -> float:
    """User + system CPU time of process root and its live descendants, in ms (a gorn
    worker runs in a process group of its own, so the tree is followed by parent pid)."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (ppid, ticks)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # state ppid pgrp ...
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, ticks = {root}, 0
    for _ in range(8):  # depth: master, worker, the worker's children
        tree |= {pid for pid, (ppid, _) in stats.items() if ppid in tree}
    for pid in tree:
        ticks += stats.get(pid, (0, 0))[1]
    return ticks * 1000 / os.sysconf("SC_CLK_TCK")


def run_once(argv: list[str], cwd: str) -> tuple[float, float]:
    port = free_port()
    cmd = [a.replace("{PORT}", str(port)) for a in argv]
    start = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not first_200(port, start + 30):
            raise SystemExit(f"no 200 within 30 s: {' '.join(cmd)}")
        wall = (time.monotonic() - start) * 1000
        return wall, tree_cpu_ms(p.pid)
    finally:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def main() -> None:
    rounds, cwd = int(sys.argv[1]), sys.argv[2]
    servers: dict[str, list[str]] = {}
    for spec in sys.argv[3:]:
        name, _, cmd = spec.partition("=")
        servers[name] = cmd.split()
    times: dict[str, list[float]] = {n: [] for n in servers}
    cpu: dict[str, list[float]] = {n: [] for n in servers}
    for _ in range(rounds):
        for name, argv in servers.items():
            wall, used = run_once(argv, cwd)
            times[name].append(wall)
            cpu[name].append(used)
    print("| server | median ms | min ms | max ms | CPU ms (median) | rounds |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        print(
            f"| {name} | {statistics.median(ts):.0f} | {min(ts):.0f} | {max(ts):.0f} "
            f"| {statistics.median(cpu[name]):.0f} | {len(ts)} |"
        )


if __name__ == "__main__":
    main()
