"""Turn the bench's rounds into markdown tables.

Every figure in a table is the median over the rounds of one target in one
case; errors are summed over the rounds instead, because one failed round is
worth reporting even when the median looks fine. A target with any error is
flagged "(!)" next to its name.
"""

from statistics import median

MEDIAN_FIELDS = (
    "rps",
    "p50_us",
    "p99_us",
    "cpu_us_per_req",
    "backend_us_per_req",
    "bytes_per_req",
)


def summarize(rounds, body_bytes):
    """Medians and summed errors of one target's rounds in one case."""
    ok = [r for r in rounds if "failure" not in r]
    summary = {"rounds": len(rounds), "ok_rounds": len(ok)}
    for key in MEDIAN_FIELDS:
        values = [r[key] for r in ok if r.get(key) is not None]
        summary[key] = median(values) if values else None

    problems = []
    non_2xx = sum(r.get("non_2xx", 0) for r in rounds)
    if non_2xx:
        problems.append(f"{non_2xx} non-2xx")
    socket_errors = {}
    for r in rounds:
        for kind, count in r.get("socket_errors", {}).items():
            socket_errors[kind] = socket_errors.get(kind, 0) + count
    for kind, count in sorted(socket_errors.items()):
        problems.append(f"{count} {kind} errors")
    # wrk counts bytes, not bodies: fewer bytes than the body per response means
    # the target answered with something else (an error page, a cut body).
    if summary["bytes_per_req"] is not None and summary["bytes_per_req"] < body_bytes * 0.98:
        problems.append(f"only {summary['bytes_per_req']:.0f} B read per response")
    for r in rounds:
        if "failure" in r:
            problems.append(r["failure"])
        problems.extend(r.get("warnings", []))
    summary["problems"] = problems
    return summary


def _num(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def _name(target, summary):
    return f"{target} (!)" if summary["problems"] else target


def case_table(summaries):
    """One case: a row per target. summaries: list of (target name, summary)."""
    lines = [
        "| target | req/s | p50 µs | p99 µs | CPU µs/req | backends µs/req | errors |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for name, s in summaries:
        errors = "; ".join(s["problems"]) if s["problems"] else "none"
        lines.append(
            f"| {_name(name, s)} | {_num(s['rps'])} | {_num(s['p50_us'])} | "
            f"{_num(s['p99_us'])} | {_num(s['cpu_us_per_req'], 1)} | "
            f"{_num(s['backend_us_per_req'], 1)} | {errors} |"
        )
    return lines


def ratio_rows(case_label, subject, by_name):
    """subject's throughput, CPU per request and p99 against nginx, HAProxy and,
    figure by figure, whichever of the two did better on that figure."""
    me = by_name[subject]
    others = [n for n in ("nginx", "HAProxy") if n in by_name]
    rows = []
    for other in others:
        o = by_name[other]
        rows.append(
            f"| {case_label} | {other} | {_ratio(me['rps'], o['rps'])} | "
            f"{_ratio(me['cpu_us_per_req'], o['cpu_us_per_req'])} | "
            f"{_ratio(me['p99_us'], o['p99_us'])} |"
        )
    if len(others) == 2:

        def best(key, pick):
            values = [by_name[n][key] for n in others if by_name[n][key] is not None]
            return pick(values) if values else None

        rows.append(
            f"| {case_label} | better of the two | {_ratio(me['rps'], best('rps', max))} | "
            f"{_ratio(me['cpu_us_per_req'], best('cpu_us_per_req', min))} | "
            f"{_ratio(me['p99_us'], best('p99_us', min))} |"
        )
    return rows


RATIO_HEADER = [
    (
        "| case | against | req/s ratio (>1 better) | CPU/req ratio (<1 better) "
        "| p99 ratio (<1 better) |"
    ),
    "|---|---|--:|--:|--:|",
]


def latency_added_rows(body_label, by_name):
    """At one connection: what each proxy adds to the direct round trip."""
    direct = by_name.get("direct")
    rows = []
    if direct is None:
        return rows
    for name, s in by_name.items():
        if name == "direct":
            continue
        p50 = None if None in (s["p50_us"], direct["p50_us"]) else s["p50_us"] - direct["p50_us"]
        p99 = None if None in (s["p99_us"], direct["p99_us"]) else s["p99_us"] - direct["p99_us"]
        rows.append(f"| {body_label} | {_name(name, s)} | {_num(p50)} | {_num(p99)} |")
    return rows


LATENCY_ADDED_HEADER = [
    "| body | target | p50 added µs | p99 added µs |",
    "|---|---|--:|--:|",
]


def memory_table(memory, idle_conns):
    lines = [
        (
            f"| target | RSS at start KiB | RSS with {idle_conns:,} idle KiB "
            "| KiB per idle connection | idle connections held | notes |"
        ),
        "|---|--:|--:|--:|--:|---|",
    ]
    for name, m in memory:
        lines.append(
            f"| {name} | {_num(m.get('rss_before_kib'))} | {_num(m.get('rss_after_kib'))} | "
            f"{_num(m.get('kib_per_conn'), 2)} | {_num(m.get('alive'))} | {m.get('notes') or ''} |"
        )
    return lines
