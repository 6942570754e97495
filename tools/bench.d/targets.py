"""The targets wrk is pointed at, and starting them.

Two nginx backends (the providers), then nginx as a reverse proxy, HAProxy,
croupier (with both backends announced) and, where it exists, a bare TCP relay
as the floor. Each target is checked with a few real requests before any figure
is taken from it. Configs are filled from the templates beside this file.
"""

import http.client
import json
import os
import re
import time

import procs
from prereqs import version_of
from procs import BenchError

HERE = os.path.dirname(os.path.abspath(__file__))

TOPIC = "bench"
BODY_16 = "0123456789abcdef"
BODY_4K = BODY_16 * 256
BODIES = {"/16": BODY_16.encode(), "/4k": BODY_4K.encode()}

# Lease long enough to outlive any run: croupier must not drop a backend mid-round.
ANNOUNCE_TTL_S = 3600
ANNOUNCE_TIMEOUT_S = 15.0
# Headroom over the idle connections for wrk and the upstream pools.
CONN_HEADROOM = 2048
REQUEST_TIMEOUT_S = 5.0


class Target:
    """Something wrk can be pointed at: a backend itself, or a proxy process."""

    def __init__(self, name, port, proc=None, has_workers=False):
        self.name = name
        self.port = port
        self.proc = proc
        # nginx does its work in the children of the master; the master idles.
        self.has_workers = has_workers
        self.failure = None

    def cpu_pids(self):
        if self.proc is None:
            return []
        if self.has_workers:
            return procs.children_of(self.proc.pid)
        return [self.proc.pid]

    def rss_pids(self):
        if self.has_workers:
            return [self.proc.pid] + procs.children_of(self.proc.pid)
        return [self.proc.pid]


def fill(template_name, path, values):
    with open(os.path.join(HERE, template_name)) as f:
        text = f.read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = re.search(r"@[A-Z0-9_]+@", text)
    if leftover:
        raise BenchError(f"{template_name}: placeholder {leftover.group()} was not filled")
    with open(path, "w") as f:
        f.write(text)


def start_nginx(children, tools, tmp, name, template, values, nginx_has_e):
    conf = os.path.join(tmp, f"{name}.conf")
    os.makedirs(os.path.join(tmp, f"{name}.tmp"), exist_ok=True)
    fill(template, conf, dict(values, DIR=tmp, NAME=name))
    argv = [tools["nginx"], "-p", tmp, "-c", conf]
    if nginx_has_e:
        # Otherwise nginx opens its compiled-in error log before reading the conf.
        argv += ["-e", os.path.join(tmp, f"{name}.error.log")]
    proc = children.start(name, argv, os.path.join(tmp, f"{name}.log"))
    procs.wait_listening(proc, values["PORT"])
    return proc


def http_request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        headers = {"croupier-topic": TOPIC}
        if body is not None:
            headers["content-type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def announce(port, backend_ports):
    """Announce both backends to croupier, retrying while it is still starting."""
    for backend in backend_ports:
        body = json.dumps(
            {"topic": TOPIC, "host": "127.0.0.1", "port": backend, "ttl": ANNOUNCE_TTL_S}
        )
        deadline = time.monotonic() + ANNOUNCE_TIMEOUT_S
        while True:
            try:
                status, reply = http_request(port, "POST", "/_croupier/announce", body)
                if status == 200 and json.loads(reply).get("result") == "ok":
                    break
                problem = f"status {status}: {reply[:200]!r}"
            except (OSError, ValueError, http.client.HTTPException) as e:
                problem = str(e)
            if time.monotonic() > deadline:
                raise BenchError(f"croupier refused the announce of port {backend}: {problem}")
            time.sleep(0.2)


def check_answers(target):
    """A few requests of each body through the target, to both backends when it
    balances; a wrong answer here would make every later figure meaningless."""
    for path, body in BODIES.items():
        for _ in range(4):
            try:
                status, got = http_request(target.port, "GET", path)
            except (OSError, http.client.HTTPException) as e:
                raise BenchError(f"{target.name}: GET {path} failed: {e}") from e
            if status != 200 or got != body:
                raise BenchError(
                    f"{target.name}: GET {path} answered {status} with {len(got)} bytes "
                    f"({got[:120]!r}); expected 200 with {len(body)} bytes"
                )


def start_backends(children, tools, tmp):
    """Start the two nginx backends; return (their procs, their ports)."""
    nginx_has_e = _version_tuple(version_of([tools["nginx"], "-v"])) >= (1, 19, 5)
    with open(os.path.join(tmp, "body-4k"), "wb") as f:
        f.write(BODIES["/4k"])
    ports = procs.free_ports(2)
    backends = []
    for i, port in enumerate(ports, start=1):
        values = {"PORT": port, "BODY_16": BODY_16}
        backends.append(
            start_nginx(
                children, tools, tmp, f"backend-{i}", "nginx-backend.conf", values, nginx_has_e
            )
        )
    return backends, ports


def start_proxies(children, args, tools, tmp, backend_ports, croupier_path, l4_path, phase):
    """Start every proxy afresh, each checked with a few requests; return the
    targets, "direct" (the first backend itself) first. phase names the logs."""
    nginx_has_e = _version_tuple(version_of([tools["nginx"], "-v"])) >= (1, 19, 5)
    extra = getattr(args, "extra_croupier", None) or []
    ports = procs.free_ports(4 + len(extra))
    b1, b2 = backend_ports
    targets = [Target("direct", b1)]

    values = {
        "PORT": ports[0],
        "CORES": args.cores,
        "BACKEND_1": b1,
        "BACKEND_2": b2,
        "WORKER_CONNECTIONS": args.idle_conns + CONN_HEADROOM,
        "FD_LIMIT": args.fd_limit,
    }
    proc = start_nginx(
        children, tools, tmp, f"nginx-proxy-{phase}", "nginx-proxy.conf", values, nginx_has_e
    )
    targets.append(Target("nginx", ports[0], proc, has_workers=True))

    cfg = os.path.join(tmp, f"haproxy-{phase}.cfg")
    fill(
        "haproxy.cfg",
        cfg,
        {
            "PORT": ports[1],
            "CORES": args.cores,
            "BACKEND_1": b1,
            "BACKEND_2": b2,
            "MAXCONN": args.idle_conns + CONN_HEADROOM,
        },
    )
    proc = children.start(
        "haproxy", [tools["haproxy"], "-db", "-f", cfg], os.path.join(tmp, f"haproxy-{phase}.log")
    )
    procs.wait_listening(proc, ports[1])
    targets.append(Target("HAProxy", ports[1], proc))

    if croupier_path:
        argv = [
            croupier_path,
            "--host",
            "127.0.0.1",
            "--cores",
            str(args.cores),
            *args.croupier_args.split(),
            str(ports[2]),
        ]
        proc = children.start("croupier", argv, os.path.join(tmp, f"croupier-{phase}.log"))
        procs.wait_listening(proc, ports[2])
        announce(ports[2], backend_ports)
        targets.append(Target("croupier", ports[2], proc))

    # Variants of croupier side by side with it (e.g. a build without
    # per-request metrics), each with a name of its own in the tables.
    for index, spec in enumerate(extra):
        name, _, path = spec.partition("=")
        port = ports[4 + index]
        argv = [path, "--host", "127.0.0.1", "--cores", str(args.cores), str(port)]
        proc = children.start(name, argv, os.path.join(tmp, f"{name}-{phase}.log"))
        procs.wait_listening(proc, port)
        announce(port, backend_ports)
        targets.append(Target(name, port, proc))

    if l4_path:
        argv = [l4_path, "--listen", f"127.0.0.1:{ports[3]}", "--upstream", f"127.0.0.1:{b1}"]
        proc = children.start("l4-relay", argv, os.path.join(tmp, f"l4-relay-{phase}.log"))
        procs.wait_listening(proc, ports[3])
        targets.append(Target("l4 floor", ports[3], proc))

    for target in targets:
        check_answers(target)
    return targets


def stop_proxies(children, targets):
    for target in targets:
        if target.proc is not None:
            children.stop(target.proc)


def _version_tuple(text):
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)
