"""Start to first 200: how long a server takes from exec to answering its first request.

Used by bench/startup.sh. For each round and each server (interleaved, so machine noise hits
both alike) it starts the server in a process group of its own, connects to its address every
millisecond until a GET / answers 200, records the time since the exec, and stops the group.
Prints one line per server: median, min and max in milliseconds over the rounds.
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


def run_once(argv: list[str], cwd: str) -> float:
    port = free_port()
    cmd = [a.replace("{PORT}", str(port)) for a in argv]
    start = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if not first_200(port, start + 30):
            raise SystemExit(f"no 200 within 30 s: {' '.join(cmd)}")
        return (time.monotonic() - start) * 1000
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
    for _ in range(rounds):
        for name, argv in servers.items():
            times[name].append(run_once(argv, cwd))
    print("| server | median ms | min ms | max ms | rounds |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.0f} | {min(ts):.0f} | {max(ts):.0f} | {len(ts)} |")


if __name__ == "__main__":
    main()
