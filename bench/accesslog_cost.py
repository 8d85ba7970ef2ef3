"""Cost of one access-log line in the worker, in process: formatting alone and formatting
plus the write(2) to a file. Run: python bench/accesslog_cost.py"""

import os
import sys
import tempfile
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "worker", "pyworker"))
from gorn_worker.accesslog import AccessLog  # noqa: E402

DEFAULT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
ENV = {
    "REMOTE_ADDR": "10.1.2.3", "REQUEST_METHOD": "GET", "RAW_URI": "/api/items?page=2",
    "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64)",
    "HTTP_REFERER": "https://example.com/", "PATH_INFO": "/api/items", "QUERY_STRING": "page=2",
}
HEADERS = [("Content-Type", "application/json"), ("Content-Length", "1024")]
N = 200_000

with tempfile.TemporaryDirectory() as d:
    for name, fmt in (("default", DEFAULT), ("json", "json")):
        log = AccessLog(os.path.join(d, name + ".log"), fmt)
        f = min(timeit.repeat(lambda: log.format(ENV, 200, HEADERS, 1024, 1_234_000), number=N, repeat=3)) / N
        w = min(timeit.repeat(lambda: log.write(ENV, 200, HEADERS, 1024, 1_234_000), number=N, repeat=3)) / N
        print(f"{name:8} format {f * 1e6:.2f} us/line, format+write {w * 1e6:.2f} us/line")
        log.close()
