#!/usr/bin/env python3
"""croupier's whole-system benchmark: croupier next to nginx and HAProxy.

Everything runs on 127.0.0.1 on this one machine. Two nginx instances serve
fixed bodies (16 B at /16, 4 KiB at /4k) as the backends. nginx (as a reverse
proxy), HAProxy and croupier each balance over both; an optional bare TCP relay
(target/release/l4-relay) gives a floor no HTTP proxy can beat. wrk drives the
targets in alternating rounds, so a slow minute on a shared machine hurts every
target alike, and after each round the CPU time the proxy's processes spent
(/proc/<pid>/stat utime + stime) is divided by the requests wrk completed:
CPU per request is steadier than requests per second where the load generator
and the proxy share two cores. Then each figure's median over the rounds is
tabulated, with croupier's ratios to the others.

The memory test opens thousands of keep-alive client connections to each
proxy (one answered request each, then idle) and reports how much resident
memory each idle connection costs.

Every process started here is stopped at exit, on error and on Ctrl-C; the
files live in one temp dir that is removed at the end (--keep-temp keeps it).
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import procs
import report
import wrk

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

TOPIC = "bench"
BODY_16 = "0123456789abcdef"
BODY_4K = BODY_16 * 256
BODIES = {"/16": BODY_16.encode(), "/4k": BODY_4K.encode()}

# (label, path, body bytes) × (connections, wrk threads)
BODY_CASES = [("16 B", "/16", 16), ("4 KiB", "/4k", 4096)]
CONN_CASES = [(64, 2), (1, 1)]

FD_LIMIT = 65536
# Lease long enough to outlive any run: croupier must not drop a backend mid-round.
ANNOUNCE_TTL_S = 3600
ANNOUNCE_TIMEOUT_S = 15.0
# Headroom over the idle connections for wrk and the upstream pools.
CONN_HEADROOM = 2048
# Time for a proxy to settle after the idle clients arrive, before RSS is read.
MEMORY_SETTLE_S = 1.0
HOLDER_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 5.0


class BenchError(RuntimeError):
    """A failure the bench explains in one message and exits 1 on."""


def parse_args():
    p = argparse.ArgumentParser(
        prog="tools/bench",
        description="Benchmark croupier against nginx and HAProxy on this machine.",
    )
    p.add_argument("--cores", type=int, default=1, help="proxy workers/threads (default 1)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk round (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per case (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target per case")
    p.add_argument("--croupier", default=None, help="croupier binary (target/release/croupier)")
    p.add_argument("--croupier-args", default="", help="extra croupier options, one string")
    p.add_argument("--no-croupier", action="store_true", help="benchmark the others only")
    p.add_argument("--build", action="store_true", help="run cargo build --release first")
    p.add_argument("--l4", default=None, help="bare TCP relay for the floor row "
                   "(default target/release/l4-relay, skipped when absent)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s rounds, 1 round")
    p.add_argument("--skip-memory", action="store_true", help="skip the idle-connection test")
    p.add_argument("--idle-conns", type=int, default=5000, help="memory test connections")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--json", help="also write every round's figures to this file")
    p.add_argument("--keep-temp", action="store_true", help="keep the temp dir (configs, logs)")
    args = p.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 2, 1, 1
    if args.cores < 1 or args.duration < 1 or args.rounds < 1 or args.idle_conns < 1:
        p.error("--cores, --duration, --rounds and --idle-conns must be at least 1")
    return args


def say(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tools


def find_tool(name):
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=path)


def ensure_tools():
    """Install nginx, HAProxy and wrk from Debian's packages where missing."""
    missing = [t for t in ("nginx", "haproxy", "wrk") if not find_tool(t)]
    if missing:
        if os.geteuid() != 0:
            raise BenchError(f"missing {', '.join(missing)}; run as root to apt-get install them")
        say(f"installing {' '.join(missing)} with apt-get")
        # A policy-rc.d that says 101 keeps the packages' system services from
        # starting: this bench runs its own instances and wants no others around.
        policy = "/usr/sbin/policy-rc.d"
        made_policy = not os.path.exists(policy)
        if made_policy:
            with open(policy, "w") as f:
                f.write("#!/bin/sh\n# written by croupier tools/bench during apt-get\nexit 101\n")
            os.chmod(policy, 0o755)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *missing]):
                if subprocess.run(argv, env=env, stdout=sys.stderr).returncode != 0:
                    raise BenchError(f"`{' '.join(argv)}` failed")
        finally:
            if made_policy:
                os.remove(policy)
    tools = {t: find_tool(t) for t in ("nginx", "haproxy", "wrk")}
    for name, path in tools.items():
        if not path:
            raise BenchError(f"{name} still missing after apt-get install")
    return tools


def ensure_croupier(args):
    """The croupier binary to run, built when it is the default one and missing."""
    default = os.path.join(REPO, "target", "release", "croupier")
    path = os.path.abspath(args.croupier) if args.croupier else default
    if args.build or (path == default and not os.path.exists(path)):
        say("building croupier: cargo build --release (a few minutes on 2 cores)")
        cargo = find_tool("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
        rc = subprocess.run([cargo, "build", "--release"], cwd=REPO, stdout=sys.stderr).returncode
        if rc != 0:
            raise BenchError(
                "cargo build --release failed (see above); fix the build, point --croupier "
                "at a binary, or pass --no-croupier to benchmark nginx and HAProxy alone"
            )
    if not os.access(path, os.X_OK):
        raise BenchError(
            f"no croupier binary at {path}; build it, give --croupier PATH, "
            "or pass --no-croupier to benchmark nginx and HAProxy alone"
        )
    return path


def version_of(argv):
    try:
        out = subprocess.run(argv, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "unknown"


# ---------------------------------------------------------------- targets


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
                raise BenchError(f"{target.name}: GET {path} failed: {e}")
            if status != 200 or got != body:
                raise BenchError(
                    f"{target.name}: GET {path} answered {status} with {len(got)} bytes "
                    f"({got[:120]!r}); expected 200 with {len(body)} bytes"
                )


def start_targets(children, args, tools, tmp, croupier_path, l4_path):
    """Start the backends and every proxy; return (backend procs, targets)."""
    ports = procs.free_ports(6)
    b1, b2 = ports[0], ports[1]
    nginx_version = version_of([tools["nginx"], "-v"])
    nginx_has_e = _version_tuple(nginx_version) >= (1, 19, 5)

    backends = []
    for i, port in enumerate((b1, b2), start=1):
        values = {"PORT": port, "BODY_16": BODY_16, "BODY_4K": BODY_4K}
        backends.append(
            start_nginx(children, tools, tmp, f"backend-{i}", "nginx-backend.conf", values,
                        nginx_has_e)
        )
    targets = [Target("direct", b1)]

    values = {
        "PORT": ports[2],
        "CORES": args.cores,
        "BACKEND_1": b1,
        "BACKEND_2": b2,
        "WORKER_CONNECTIONS": args.idle_conns + CONN_HEADROOM,
    }
    proc = start_nginx(children, tools, tmp, "nginx-proxy", "nginx-proxy.conf", values,
                       nginx_has_e)
    targets.append(Target("nginx", ports[2], proc, has_workers=True))

    cfg = os.path.join(tmp, "haproxy.cfg")
    fill("haproxy.cfg", cfg, {"PORT": ports[3], "CORES": args.cores, "BACKEND_1": b1,
                              "BACKEND_2": b2, "MAXCONN": args.idle_conns + CONN_HEADROOM})
    proc = children.start("haproxy", [tools["haproxy"], "-db", "-f", cfg],
                          os.path.join(tmp, "haproxy.log"))
    procs.wait_listening(proc, ports[3])
    targets.append(Target("HAProxy", ports[3], proc))

    if croupier_path:
        argv = [croupier_path, "--host", "127.0.0.1", "--cores", str(args.cores),
                *args.croupier_args.split(), str(ports[4])]
        proc = children.start("croupier", argv, os.path.join(tmp, "croupier.log"))
        procs.wait_listening(proc, ports[4])
        announce(ports[4], (b1, b2))
        targets.append(Target("croupier", ports[4], proc))

    if l4_path:
        argv = [l4_path, "--listen", f"127.0.0.1:{ports[5]}", "--upstream", f"127.0.0.1:{b1}"]
        proc = children.start("l4-relay", argv, os.path.join(tmp, "l4-relay.log"))
        procs.wait_listening(proc, ports[5])
        targets.append(Target("l4 floor", ports[5], proc))

    for target in targets:
        check_answers(target)
    return backends, targets


def _version_tuple(text):
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


# ---------------------------------------------------------------- memory


def read_json_line(proc, timeout_s):
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    if not ready:
        raise BenchError("the connection holder gave no answer in time")
    line = proc.stdout.readline()
    if not line:
        raise BenchError("the connection holder exited without an answer")
    return json.loads(line)


def measure_memory(children, args, tmp, target):
    """RSS before and with args.idle_conns idle keep-alive clients."""
    before = procs.rss_kib(target.rss_pids())
    argv = [sys.executable, os.path.join(HERE, "hold_conns.py"), "--port", str(target.port),
            "--count", str(args.idle_conns), "--path", "/16", "--topic", TOPIC,
            "--timeout-s", str(HOLDER_TIMEOUT_S - 10)]
    holder = children.start("hold_conns", argv, os.path.join(tmp, "hold_conns.log"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready = read_json_line(holder, HOLDER_TIMEOUT_S)
        time.sleep(MEMORY_SETTLE_S)
        after = procs.rss_kib(target.rss_pids())
        holder.stdin.write(b"check\n")
        holder.stdin.flush()
        check = read_json_line(holder, 30)
    finally:
        children.stop(holder)

    notes = []
    if ready["failed"]:
        notes.append(f"{ready['failed']} failed: {ready['errors']}")
    if check["closed"]:
        notes.append(f"{check['closed']} closed by the proxy before the check")
    held = check["alive"]
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "held": held,
        "alive": held,
        "kib_per_conn": (after - before) / held if held else None,
        "notes": "; ".join(notes),
    }


# ---------------------------------------------------------------- rounds


def one_round(children, tools, tmp, target, backends, case, duration_s):
    """One wrk run against target, with the CPU its processes spent meanwhile."""
    body_label, path, body_bytes, conns, threads = case
    pids = target.cpu_pids()
    backend_pids = [p for b in backends for p in procs.children_of(b.pid)]
    cpu_before = procs.cpu_ticks(pids) if pids else None
    backend_before = procs.cpu_ticks(backend_pids)

    result = wrk.run(children, tools["wrk"], f"http://127.0.0.1:{target.port}{path}",
                     threads, conns, duration_s, TOPIC, os.path.join(tmp, "wrk.log"))

    result.pop("raw", None)
    result["warnings"] = []
    requests = result["requests"]
    if target.proc is not None and target.proc.poll() is not None:
        target.failure = f"exited with status {target.proc.returncode} during a round"
        raise wrk.WrkError(target.failure)
    if pids:
        if target.cpu_pids() != pids:
            result["warnings"].append("worker processes changed during the round")
        ticks = procs.cpu_ticks(pids) - cpu_before
        result["cpu_us_per_req"] = ticks / procs.CLOCK_TICKS_PER_S * 1e6 / requests if requests else None
    else:
        result["cpu_us_per_req"] = None
    ticks = procs.cpu_ticks(backend_pids) - backend_before
    result["backend_us_per_req"] = ticks / procs.CLOCK_TICKS_PER_S * 1e6 / requests if requests else None
    result["bytes_per_req"] = result["bytes_read"] / requests if requests else 0.0
    if not requests:
        result["failure"] = "no request completed"
    return result


def run_cases(children, args, tools, tmp, backends, targets):
    """Every case, every round, every target in turn; returns rounds[case][target]."""
    cases = [(bl, path, bb, conns, threads)
             for (bl, path, bb) in BODY_CASES for (conns, threads) in CONN_CASES]
    rounds = {}
    for case in cases:
        label = case_label(case)
        rounds[label] = {t.name: [] for t in targets}
        for target in targets:
            if args.warmup and not target.failure:
                try:
                    wrk.run(children, tools["wrk"], f"http://127.0.0.1:{target.port}{case[1]}",
                            case[4], case[3], args.warmup, TOPIC, os.path.join(tmp, "wrk.log"))
                except wrk.WrkError as e:
                    say(f"[{label}] warm-up of {target.name} failed: {e}")
        for r in range(args.rounds):
            for target in targets:
                tag = f"[{label}, round {r + 1}/{args.rounds}] {target.name}"
                if target.failure:
                    rounds[label][target.name].append({"failure": target.failure})
                    continue
                try:
                    res = one_round(children, tools, tmp, target, backends, case, args.duration)
                except wrk.WrkError as e:
                    say(f"{tag}: FAILED: {e}")
                    rounds[label][target.name].append({"failure": str(e).splitlines()[0]})
                    continue
                rounds[label][target.name].append(res)
                cpu = res["cpu_us_per_req"]
                errs = res["non_2xx"] + sum(res["socket_errors"].values())
                say(f"{tag}: {res['rps']:,.0f} req/s, p50 {res['p50_us']:,.0f} µs, "
                    f"p99 {res['p99_us']:,.0f} µs"
                    + (f", CPU {cpu:.1f} µs/req" if cpu is not None else "")
                    + (f", {errs} ERRORS" if errs else ""))
    return cases, rounds


def case_label(case):
    body_label, _, _, conns, _ = case
    return f"{body_label} body, {conns} connection{'s' if conns != 1 else ''}"


# ---------------------------------------------------------------- report


def machine_lines(tools, croupier_path, l4_path):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else "no commit"
    lines = [
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, "
        f"Linux {platform.release()}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- nginx: {version_of([tools['nginx'], '-v'])}",
        f"- HAProxy: {version_of([tools['haproxy'], '-v'])}",
        f"- wrk: {version_of([tools['wrk'], '-v'])}",
    ]
    if croupier_path:
        lines.append(f"- croupier: {version_of([croupier_path, '--version'])} (commit {commit})")
    if l4_path:
        lines.append(f"- l4 floor: {l4_path}")
    return lines


def build_report(args, tools, croupier_path, l4_path, cases, rounds, memory):
    out = ["## Benchmark", ""]
    out.append(
        f"`tools/bench --cores {args.cores} --duration {args.duration} --rounds {args.rounds}`: "
        f"proxies with {args.cores} worker(s)/thread(s); two nginx backends "
        "(1 worker each); wrk `-t2 -c64` and `-t1 -c1`; "
        f"median of {args.rounds} alternating round(s) of {args.duration} s. "
        "CPU µs/req is the proxy's own utime+stime per request (nginx: its workers); "
        "backends µs/req is what the two backends spent per request."
    )
    out.append("")
    out += machine_lines(tools, croupier_path, l4_path)

    summaries = {}
    for case in cases:
        label = case_label(case)
        summaries[label] = {name: report.summarize(rs, case[2])
                            for name, rs in rounds[label].items()}
        out += ["", f"### {label}", ""]
        out += report.case_table(list(summaries[label].items()))

    if croupier_path:
        out += ["", "### croupier against nginx and HAProxy", ""]
        out += report.RATIO_HEADER
        for case in cases:
            label = case_label(case)
            out += report.ratio_rows(label, "croupier", summaries[label])
    else:
        out += ["", "(croupier not run: --no-croupier)"]

    out += ["", "### Latency added over direct, 1 connection", ""]
    out += report.LATENCY_ADDED_HEADER
    for case in cases:
        if case[3] == 1:
            out += report.latency_added_rows(case[0], summaries[case_label(case)])

    if memory:
        out += ["", f"### Memory: {args.idle_conns:,} idle keep-alive client connections", ""]
        out += report.memory_table(memory, args.idle_conns)
        out += ["", "RSS is VmRSS (nginx: master + workers) right after start and a first "
                "request, then with the idle clients connected. nginx allocates its "
                f"worker_connections slots ({args.idle_conns + CONN_HEADROOM:,} per worker here) "
                "at start, so they count in its start RSS, not per connection."]
    return "\n".join(out) + "\n", summaries


# ---------------------------------------------------------------- main


def main():
    args = parse_args()
    children = procs.Children()
    tmp = None

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        tools = ensure_tools()
        croupier_path = None if args.no_croupier else ensure_croupier(args)
        l4_path = os.path.abspath(args.l4) if args.l4 else os.path.join(REPO, "target", "release",
                                                                        "l4-relay")
        if not os.access(l4_path, os.X_OK):
            if args.l4:
                raise BenchError(f"--l4 {args.l4}: no executable there")
            l4_path = None

        # Children inherit the limit: croupier needs it for the idle clients.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, max(hard, FD_LIMIT)))

        tmp = tempfile.mkdtemp(prefix="croupier-bench.")
        say(f"temp dir {tmp}")
        backends, targets = start_targets(children, args, tools, tmp, croupier_path, l4_path)
        say("targets up: " + ", ".join(f"{t.name} :{t.port}" for t in targets))

        memory = []
        if not args.skip_memory:
            for target in targets:
                if target.proc is None:
                    continue
                say(f"memory: {args.idle_conns} idle connections to {target.name}")
                memory.append((target.name, measure_memory(children, args, tmp, target)))

        cases, rounds = run_cases(children, args, tools, tmp, backends, targets)
        text, summaries = build_report(args, tools, croupier_path, l4_path, cases, rounds, memory)
        print(text)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "rounds": rounds, "memory": dict(memory),
                           "summaries": summaries}, f, indent=1)
        return 0
    except RuntimeError as e:
        # BenchError, wrk.WrkError and start-up failures: one message, exit 1.
        say(f"tools/bench: {e}")
        return 1
    except KeyboardInterrupt:
        say("tools/bench: interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        children.stop_all()
        if tmp and not args.keep_temp:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            say(f"kept {tmp}")


if __name__ == "__main__":
    sys.exit(main())
