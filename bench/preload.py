"""--preload: respawn time and the process tree's memory, side by side.

Used by bench/preload.sh. Two measurements, each over the servers given as NAME=COMMAND
({PORT} is replaced by a free port):

respawn  (gorn servers only) SIGKILL a ready worker, then read the master's JSON log for the
         replacement's "worker ready" line: kill to ready, in ms, over ROUNDS kills.
pss      after REQUESTS requests spread over the workers, the sum of Pss (smaps_rollup) of
         the server's whole process tree: a page shared by several processes counts once.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


URL = os.environ.get("URL", "/")


def get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", URL)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_200(port: int, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if get(port) == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"no 200 on port {port} within {limit} s")


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


def tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Server:
    def __init__(self, command: str, cwd: str, workers: int) -> None:
        self.port = free_port()
        argv = command.replace("{PORT}", str(self.port)).replace("{W}", str(workers)).split()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.lines: list[dict] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        wait_200(self.port)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.lines.append(rec)
                self.cond.notify_all()

    def ready_after(self, n: int, limit: float = 30.0) -> dict:
        """The first "worker ready" record after the first n records."""
        deadline = time.monotonic() + limit
        with self.cond:
            while True:
                for rec in self.lines[n:]:
                    if rec.get("msg") == "worker ready":
                        return rec
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SystemExit("no worker ready line after a kill")
                self.cond.wait(left)

    def workers(self) -> list[int]:
        return [p for p in tree(self.proc.pid) if "worker" in title(p) and p != self.proc.pid]

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def respawn(name: str, command: str, cwd: str, rounds: int) -> None:
    s = Server(command, cwd, 2)
    try:
        ready = 0
        while ready < 2:  # both first workers
            time.sleep(0.05)
            ready = sum(1 for r in s.lines if r.get("msg") == "worker ready")
        times = []
        for _ in range(rounds):
            time.sleep(0.3)
            victim = s.workers()[0]
            with s.cond:
                n = len(s.lines)
            t0 = time.time()
            os.kill(victim, signal.SIGKILL)
            rec = s.ready_after(n)
            times.append((rec["ts"] - t0) * 1000)
        times.sort()
        p90 = times[int(len(times) * 0.9) - 1]
        print(f"  {name:24} kill to ready: p50 {statistics.median(times):7.1f} ms  p90 {p90:7.1f}  max {times[-1]:7.1f}")
    finally:
        s.stop()


def pss(name: str, command: str, cwd: str, workers: int, requests: int) -> None:
    s = Server(command, cwd, workers)
    try:
        deadline = time.monotonic() + 60
        while len(tree(s.proc.pid)) <= workers and time.monotonic() < deadline:  # the master and its workers
            time.sleep(0.05)
        time.sleep(0.5)
        for _ in range(requests):
            get(s.port)
        procs = tree(s.proc.pid)
        each = [pss_kib(p) for p in procs]
        print(f"  {name:24} {workers} workers: total PSS {sum(each) / 1024:7.1f} MiB over {len(procs)} processes")
        rest = ", ".join(f"{kib / 1024:.1f}" for kib in sorted(each[1:], reverse=True))
        print(f"  {'':24} PSS by process: master {each[0] / 1024:.1f} MiB; its children {rest}")
    finally:
        s.stop()


def main() -> None:
    what, cwd = sys.argv[1], sys.argv[2]
    servers = [a.split("=", 1) for a in sys.argv[3:]]
    if what == "respawn":
        rounds = int(os.environ.get("ROUNDS", "20"))
        for name, command in servers:
            respawn(name, command, cwd, rounds)
    else:
        requests = int(os.environ.get("REQUESTS", "200"))
        for workers in [int(w) for w in os.environ.get("WORKERS", "1 4").split()]:
            for name, command in servers:
                pss(name, command, cwd, workers, requests)


if __name__ == "__main__":
    main()
