"""Run wrk once and read its report.

wrk prints its figures for people; `parse` turns the lines the bench needs
(latency percentiles from --latency, the request count, bytes read,
requests/s, socket errors, non-2xx answers) into numbers. A line it cannot
find is an error rather than a silent zero, so a wrk whose output format
changed cannot pass for a fast proxy.
"""

import re
import subprocess

# wrk runs for its -d duration; past that plus this margin it is stuck.
OVERRUN_S = 30

_TIME_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_SIZE_UNITS_B = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


class WrkError(RuntimeError):
    pass


def _time_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise WrkError(f"cannot read wrk time {text!r}")
    return float(m.group(1)) * _TIME_UNITS_US[m.group(2)]


def _size_b(text):
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if not m:
        raise WrkError(f"cannot read wrk size {text!r}")
    return float(m.group(1)) * _SIZE_UNITS_B[m.group(2)]


def parse(output):
    """Figures from one wrk --latency report, as a dict."""
    result = {"non_2xx": 0, "socket_errors": {}}

    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.MULTILINE))
    if "50" not in percentiles or "99" not in percentiles:
        raise WrkError("no latency distribution in wrk output (was --latency given?)")
    result["p50_us"] = _time_us(percentiles["50"])
    result["p99_us"] = _time_us(percentiles["99"])

    m = re.search(r"^\s+(\d+) requests in ([\d.]+\w+), (\S+) read\s*$", output, re.MULTILINE)
    if not m:
        raise WrkError("no 'N requests in' line in wrk output")
    result["requests"] = int(m.group(1))
    result["elapsed_s"] = _time_us(m.group(2)) / 1e6
    result["bytes_read"] = _size_b(m.group(3))

    m = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", output, re.MULTILINE)
    if not m:
        raise WrkError("no 'Requests/sec' line in wrk output")
    result["rps"] = float(m.group(1))

    # Printed only when some count is non-zero.
    m = re.search(r"Socket errors: (.*)$", output, re.MULTILINE)
    if m:
        for kind, count in re.findall(r"(\w+) (\d+)", m.group(1)):
            if int(count):
                result["socket_errors"][kind] = int(count)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if m:
        result["non_2xx"] = int(m.group(1))
    return result


def run(children, wrk_path, url, threads, conns, duration_s, topic, log_path):
    """Run wrk to completion and return its parsed figures plus the raw text."""
    argv = [
        wrk_path,
        f"-t{threads}",
        f"-c{conns}",
        f"-d{duration_s}s",
        "--latency",
        "-H",
        f"croupier-topic: {topic}",
        url,
    ]
    proc = children.start("wrk", argv, log_path, stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=duration_s + OVERRUN_S)
    except subprocess.TimeoutExpired:
        children.stop(proc)
        raise WrkError(f"wrk against {url} did not finish in {duration_s + OVERRUN_S} s") from None
    children.forget(proc)
    text = out.decode("utf-8", "replace")
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(argv)}\n{text}\n")
    if proc.returncode != 0:
        raise WrkError(f"wrk against {url} exited with {proc.returncode}:\n{text}")
    result = parse(text)
    result["raw"] = text
    return result
