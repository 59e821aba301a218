"""S3 request counting shared by benches/replicate.sh and benches/s3_restore.sh.

A request is (method, path, status) as a server's access log shows it; `classify` counts them by
kind: LIST (GET on the bucket), GET (an object), any other method by name, and non-2xx statuses
as their own kinds (e.g. "GET(503)").
"""
import re

# werkzeug's access log line (moto): "... "GET /bucket/key HTTP/1.1" 200 -".
MOTO_ACCESS_LOG = re.compile(r'"(\w+) (\S+) HTTP/1\.[01]" (\d+)')


def kind(method, path, status):
    """The kind of one request."""
    parts = [x for x in path.partition("?")[0].split("/") if x]
    if method == "GET" and len(parts) <= 1:
        k = "LIST"
    elif method == "GET":
        k = "GET"
    else:
        k = method
    if not status.startswith("2"):
        k += f"({status})"
    return k


def classify(requests):
    """Counts by kind of an iterable of (method, path, status)."""
    kinds = {}
    for method, path, status in requests:
        k = kind(method, path, status)
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


def moto_requests(lines):
    """(method, path, status) of every request line of a moto access log."""
    for line in lines:
        m = MOTO_ACCESS_LOG.search(line)
        if m:
            yield m.groups()
