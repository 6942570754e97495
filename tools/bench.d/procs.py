"""Processes the bench starts, and what /proc says about them.

Every child runs in its own session (so a Ctrl-C on the terminal reaches only
the bench, which then stops the children in order) and gets SIGTERM if the
bench itself dies (PR_SET_PDEATHSIG), so nothing is left running. `Children`
stops everything it started, process group by process group, on exit.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

# How long a process may take to stop on SIGTERM before it gets SIGKILL.
STOP_GRACE_S = 3.0

# How long a server may take to start listening.
LISTEN_TIMEOUT_S = 15.0

PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """A failure the bench explains in one message and exits 1 on."""


def say(msg):
    """Progress and warnings go to stderr; stdout carries only the report."""
    print(msg, file=sys.stderr, flush=True)


_libc = ctypes.CDLL(None, use_errno=True)


def _child_setup():
    # Runs in the child between fork and exec: die with the parent. (preexec_fn
    # is unsafe only in a threaded parent; the bench has one thread.)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Children:
    """The processes the bench started; `stop_all` ends them, newest first."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path, **kwargs):
        """Start argv with stdout and stderr appended to log_path."""
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=kwargs.pop("stdin", subprocess.DEVNULL),
                stdout=kwargs.pop("stdout", log),
                stderr=log,
                start_new_session=True,
                preexec_fn=_child_setup,
                **kwargs,
            )
        proc.bench_name = name
        proc.bench_log = log_path
        self.procs.append(proc)
        return proc

    def forget(self, proc):
        if proc in self.procs:
            self.procs.remove(proc)

    def stop(self, proc):
        """SIGTERM the process group, then SIGKILL whatever is left of it."""
        self.forget(proc)
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        # Also reaps workers that outlived their master (nginx's, say).
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self):
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_ports(count):
    """Ask the kernel for `count` distinct free loopback ports. They are released
    before use, so another program could take one in between; on a bench
    machine that is unlikely, and a clash shows as a start-up failure."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def log_tail(path, lines=20):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_listening(proc, port, timeout_s=LISTEN_TIMEOUT_S):
    """Wait until something accepts on 127.0.0.1:port; fail if proc exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.bench_name} exited with status {proc.returncode} before listening "
                f"on port {port}; its log ends with:\n{log_tail(proc.bench_log)}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(
        f"{proc.bench_name} did not listen on port {port} within {timeout_s:.0f} s; "
        f"its log ends with:\n{log_tail(proc.bench_log)}"
    )


def _stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name, which may itself
    hold spaces and parentheses; index 0 is field 3 (state) of proc(5)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def children_of(pid):
    """Pids whose parent is pid (nginx's workers, for a master)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(entry)[1]) == pid:
                found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(found)


def cpu_ticks(pids):
    """utime + stime of each pid, summed, in clock ticks. For a thread group
    leader these already add up every thread of the process, live or exited.
    A pid that is gone counts 0 (callers notice the changed pid set)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def machine_ticks():
    """(busy, steal, total) clock ticks of all CPUs since boot, from /proc/stat.
    busy is user + nice + system + irq + softirq."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def rss_kib(pids):
    """VmRSS of each pid, summed, in KiB; a pid that is gone counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total
