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

Beside this file: prereqs.py (tools, the croupier build, machine facts),
targets.py (backends and proxies), procs.py (child processes and /proc),
wrk.py (running wrk and reading its report), report.py (the tables),
hold_conns.py (the idle clients of the memory test), and the nginx and HAProxy
config templates.
"""

import argparse
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import prereqs
import procs
import report
import targets as tg
import wrk
from procs import BenchError, say
from targets import CONN_HEADROOM, TOPIC

HERE = os.path.dirname(os.path.abspath(__file__))

# (label, path, body bytes) × (connections, wrk threads)
BODY_CASES = [("16 B", "/16", 16), ("4 KiB", "/4k", 4096)]
CONN_CASES = [(64, 2), (1, 1)]

# Time for a proxy to settle after the idle clients arrive, before RSS is read.
MEMORY_SETTLE_S = 3.0
HOLDER_TIMEOUT_S = 90.0
# A round in which processes other than the target, the backends and wrk took
# more than this share of the machine's CPU time (a colleague's build, say), or
# the hypervisor stole more than this, is reported as disturbed.
OTHER_LOAD_PCT_MAX = 10.0
STEAL_PCT_MAX = 5.0
# Before the rounds, the machine is sampled this long; above this share busy the
# bench warns that something else is running.
BUSY_SAMPLE_S = 1.0
BUSY_PCT_WARN = 20.0


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
    p.add_argument(
        "--extra-croupier",
        action="append",
        metavar="NAME=PATH",
        help="another croupier binary to run side by side, shown as NAME (repeatable)",
    )
    p.add_argument("--build", action="store_true", help="run cargo build --release first")
    p.add_argument(
        "--l4",
        default=None,
        help="bare TCP relay for the floor row "
        "(default target/release/l4-relay, skipped when absent)",
    )
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
    argv = [
        sys.executable,
        os.path.join(HERE, "hold_conns.py"),
        "--port",
        str(target.port),
        "--count",
        str(args.idle_conns),
        "--path",
        "/16",
        "--topic",
        TOPIC,
        "--timeout-s",
        str(HOLDER_TIMEOUT_S - 10),
    ]
    holder = children.start(
        "hold_conns",
        argv,
        os.path.join(tmp, "hold_conns.log"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
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
    # Divide by the connections the proxy really held, not by those asked for.
    alive = check["alive"]
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "alive": alive,
        "kib_per_conn": (after - before) / alive if alive else None,
        "notes": "; ".join(notes),
    }


# ---------------------------------------------------------------- rounds


def one_round(children, tools, tmp, target, backends, case, duration_s):
    """One wrk run against target, with the CPU its processes spent meanwhile,
    and how much of the machine went to anything else (a disturbed round)."""
    _, path, _, conns, threads = case
    pids = target.cpu_pids()
    backend_pids = [p for b in backends for p in procs.children_of(b.pid)]
    cpu_before = procs.cpu_ticks(pids)
    backend_before = procs.cpu_ticks(backend_pids)
    machine_before = procs.machine_ticks()
    # wrk is the only child that ends during the round, so this delta is wrk's.
    wrk_before = _children_cpu_s()

    result = wrk.run(
        children,
        tools["wrk"],
        f"http://127.0.0.1:{target.port}{path}",
        threads,
        conns,
        duration_s,
        TOPIC,
        os.path.join(tmp, "wrk.log"),
    )

    target_ticks = procs.cpu_ticks(pids) - cpu_before
    backend_ticks = procs.cpu_ticks(backend_pids) - backend_before
    machine = [b - a for a, b in zip(machine_before, procs.machine_ticks(), strict=True)]
    wrk_ticks = (_children_cpu_s() - wrk_before) * procs.CLOCK_TICKS_PER_S

    result.pop("raw", None)
    result["warnings"] = []
    result["disturbance"] = []
    if target.proc is not None and target.proc.poll() is not None:
        target.failure = f"exited with status {target.proc.returncode} during a round"
        raise wrk.WrkError(target.failure)
    requests = result["requests"]
    if not requests:
        result["failure"] = "no request completed"
    if pids and target.cpu_pids() != pids:
        result["warnings"].append("worker processes changed during the round")

    def per_request_us(ticks):
        return ticks / procs.CLOCK_TICKS_PER_S * 1e6 / requests if requests else None

    result["cpu_us_per_req"] = per_request_us(target_ticks) if pids else None
    result["backend_us_per_req"] = per_request_us(backend_ticks)
    result["bytes_per_req"] = result["bytes_read"] / requests if requests else 0.0

    busy, steal, total = machine
    if total > 0:
        other = busy - target_ticks - backend_ticks - wrk_ticks
        result["other_pct"] = max(0.0, 100.0 * other / total)
        result["steal_pct"] = 100.0 * steal / total
        if result["other_pct"] > OTHER_LOAD_PCT_MAX:
            result["disturbance"].append(f"other processes took {result['other_pct']:.0f}%")
        if result["steal_pct"] > STEAL_PCT_MAX:
            result["disturbance"].append(f"hypervisor steal {result['steal_pct']:.0f}%")
    return result


def machine_busy_pct(sample_s):
    before = procs.machine_ticks()
    time.sleep(sample_s)
    busy, _, total = [b - a for a, b in zip(before, procs.machine_ticks(), strict=True)]
    return 100.0 * busy / total if total else 0.0


def _children_cpu_s():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cases(children, args, tools, tmp, backends, targets):
    """Every case, every round, every target in turn; returns rounds[case][target]."""
    cases = [
        (bl, path, bb, conns, threads)
        for (bl, path, bb) in BODY_CASES
        for (conns, threads) in CONN_CASES
    ]
    rounds = {}
    for case in cases:
        label = case_label(case)
        rounds[label] = {t.name: [] for t in targets}
        for target in targets:
            if args.warmup and not target.failure:
                try:
                    wrk.run(
                        children,
                        tools["wrk"],
                        f"http://127.0.0.1:{target.port}{case[1]}",
                        case[4],
                        case[3],
                        args.warmup,
                        TOPIC,
                        os.path.join(tmp, "wrk.log"),
                    )
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
                say(
                    f"{tag}: {res['rps']:,.0f} req/s, p50 {res['p50_us']:,.0f} µs, "
                    f"p99 {res['p99_us']:,.0f} µs"
                    + (f", CPU {cpu:.1f} µs/req" if cpu is not None else "")
                    + (f", {errs} ERRORS" if errs else "")
                    + "".join(f" [disturbed: {d}]" for d in res["disturbance"])
                )
    return cases, rounds


def case_label(case):
    body_label, _, _, conns, _ = case
    return f"{body_label} body, {conns} connection{'s' if conns != 1 else ''}"


# ---------------------------------------------------------------- report


def build_report(args, tools, croupier_path, l4_path, cases, rounds, memory):
    out = ["## Benchmark", ""]
    out.append(
        f"`tools/bench --cores {args.cores} --duration {args.duration} --rounds {args.rounds}`: "
        f"proxies with {args.cores} worker(s)/thread(s); two nginx backends "
        "(1 worker each); wrk `-t2 -c64` and `-t1 -c1`; "
        f"median of {args.rounds} alternating round(s) of {args.duration} s. "
        "CPU µs/req is the proxy's own utime+stime per request (nginx: its workers); "
        "backends µs/req is what the two backends spent per request."
        + (" The l4 floor is a bare TCP relay to the first backend only." if l4_path else "")
    )
    out.append("")
    out += prereqs.machine_lines(tools, croupier_path, l4_path)

    summaries = {}
    for case in cases:
        label = case_label(case)
        summaries[label] = {
            name: report.summarize(rs, case[2]) for name, rs in rounds[label].items()
        }
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

    out += ["", "### Measurement notes", ""]
    out += disturbance_lines(rounds)

    if memory:
        out += ["", f"### Memory: {args.idle_conns:,} idle keep-alive client connections", ""]
        out += report.memory_table(memory, args.idle_conns)
        out += [
            "",
            (
                "RSS is VmRSS (nginx: master + workers) right after start and a first "
                "request, then with the idle clients connected. nginx allocates its "
                f"worker_connections slots ({args.idle_conns + CONN_HEADROOM:,} per worker "
                "here) at start, so they count in its start RSS, not per connection."
            ),
        ]
    return "\n".join(out) + "\n", summaries


def _pct_range(values):
    low, high = round(min(values)), round(max(values))
    return f"{low}%" if low == high else f"{low}–{high}%"


def disturbance_lines(rounds):
    """One line per case that had disturbed rounds: how many, and how much of
    the machine other processes and the hypervisor took in them."""
    lines = []
    total = 0
    for label, by_target in rounds.items():
        measured = [r for rs in by_target.values() for r in rs if "other_pct" in r]
        total += len(measured)
        hit = [r for r in measured if r.get("disturbance")]
        if hit:
            other = _pct_range([r["other_pct"] for r in hit])
            steal = _pct_range([r["steal_pct"] for r in hit])
            lines.append(
                f"- {label}: {len(hit)} of {len(measured)} rounds disturbed; other processes "
                f"took {other} of the CPU, hypervisor steal {steal}"
            )
    if not lines:
        return [f"No round of {total} was disturbed by other processes or by hypervisor steal."]
    head = (
        f"A round counts as disturbed when other processes took more than "
        f"{OTHER_LOAD_PCT_MAX:.0f}% of the CPU or the hypervisor stole more than "
        f"{STEAL_PCT_MAX:.0f}%; its figures deserve less trust. "
        "Details per round are in --json."
    )
    return [head, ""] + lines


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
        tools = prereqs.ensure_tools()
        croupier_path = None if args.no_croupier else prereqs.ensure_croupier(args)
        l4_path = (
            os.path.abspath(args.l4)
            if args.l4
            else os.path.join(prereqs.REPO, "target", "release", "l4-relay")
        )
        if not os.access(l4_path, os.X_OK):
            if args.l4:
                raise BenchError(f"--l4 {args.l4}: no executable there")
            l4_path = None

        args.fd_limit = prereqs.raise_fd_limit(args.idle_conns + CONN_HEADROOM)

        tmp = tempfile.mkdtemp(prefix="croupier-bench.")
        say(f"temp dir {tmp}")
        backends, backend_ports = tg.start_backends(children, tools, tmp)
        proxies = (children, args, tools, tmp, backend_ports, croupier_path, l4_path)

        # The memory test gets proxies of its own, so the thousands of connections
        # it opens and closes leave no trace in the throughput rounds, and the rounds
        # none in its start RSS.
        memory = []
        if not args.skip_memory:
            targets = tg.start_proxies(*proxies, "memory")
            for target in targets:
                if target.proc is None:
                    continue
                say(f"memory: {args.idle_conns} idle connections to {target.name}")
                memory.append((target.name, measure_memory(children, args, tmp, target)))
            tg.stop_proxies(children, targets)

        busy = machine_busy_pct(BUSY_SAMPLE_S)
        if busy > BUSY_PCT_WARN:
            say(
                f"warning: the machine is {busy:.0f}% busy before the rounds start; "
                "expect disturbed rounds (see the measurement notes)"
            )

        targets = tg.start_proxies(*proxies, "rounds")
        say("targets up: " + ", ".join(f"{t.name} :{t.port}" for t in targets))
        cases, rounds = run_cases(children, args, tools, tmp, backends, targets)
        text, summaries = build_report(args, tools, croupier_path, l4_path, cases, rounds, memory)
        print(text)
        flagged = sorted(
            {
                name
                for by_name in summaries.values()
                for name, summary in by_name.items()
                if summary["problems"]
            }
        )
        if flagged:
            say(f"flagged with errors: {', '.join(flagged)} (see the errors columns)")
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "args": vars(args),
                        "rounds": rounds,
                        "memory": dict(memory),
                        "summaries": summaries,
                    },
                    f,
                    indent=1,
                )
        return 0
    except RuntimeError as e:
        # BenchError, wrk.WrkError and start-up failures: one message, exit 1.
        say(f"tools/bench: {e}")
        if tmp and not args.keep_temp:
            say("(rerun with --keep-temp to keep the configs and logs)")
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
