"""What the bench needs before it starts: the tools (installed from Debian's
packages where missing), the croupier binary (built where missing), enough file
descriptors, and a description of the machine and tool versions for the report.
"""

import datetime
import os
import platform
import resource
import shutil
import subprocess
import sys

from procs import BenchError, say

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# What the bench asks for; it settles for the hard limit where it may not raise it.
FD_LIMIT = 65536


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
                if subprocess.run(argv, env=env, stdout=sys.stderr, check=False).returncode != 0:
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
        rc = subprocess.run(
            [cargo, "build", "--release"], cwd=REPO, stdout=sys.stderr, check=False
        ).returncode
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


def raise_fd_limit(needed):
    """Raise RLIMIT_NOFILE for the bench and so for its children (croupier needs
    it for the idle clients). Containers may forbid raising the hard limit even
    to root; then the soft limit goes as far as the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, max(hard, FD_LIMIT)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit < needed:
        raise BenchError(
            f"open file limit {limit} is below the {needed} descriptors needed; "
            "lower --idle-conns or raise the hard limit (ulimit -Hn)"
        )
    return limit


def version_of(argv):
    """First line a tool prints about its version. wrk has no version flag and
    prints it in its usage text with exit 1, so for wrk the status is ignored."""
    try:
        out = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if out.returncode != 0 and not os.path.basename(argv[0]).startswith("wrk"):
        return "unknown"
    text = (out.stdout + out.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "unknown"


def machine_lines(tools, croupier_path, l4_path):
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    git = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    commit = git.stdout.strip() if git.returncode == 0 else "no commit"
    dirty = subprocess.run(
        ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    )
    if dirty.returncode == 0 and dirty.stdout.strip():
        commit += " with uncommitted changes"
    lines = [
        (
            f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {model}, "
            f"Linux {platform.release()}"
        ),
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- nginx: {version_of([tools['nginx'], '-v'])}",
        f"- HAProxy: {version_of([tools['haproxy'], '-v'])}",
        f"- wrk: {version_of([tools['wrk'], '-v'])}",
    ]
    if croupier_path:
        lines.append(f"- croupier: {version_of([croupier_path, '--version'])} (commit {commit})")
    if l4_path:
        lines.append(f"- l4 floor: {l4_path}")
    return lines
