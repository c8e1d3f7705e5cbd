"""Turn the measured results into a table (terminal) and a section of ``docs/benchmarks.md``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import write_doc_section


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the results table."""

    name: str
    measured: str
    target: str
    verdict: str


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def build_rows(r: dict[str, Any]) -> list[Row]:
    """The results table, one row per measurement (targets and verdicts included)."""
    rows: list[Row] = []
    ping = r["ping"]["us"]
    rows.append(
        Row(
            "1. Redis PING round trip (redis-py)",
            f"median {ping['median']:.0f} µs, p95 {ping['p95']:.0f} µs",
            "reference",
            "-",
        )
    )
    st = r["steps"]
    n, runs = st["n"], st["runs"]
    fo = st["fresh_overhead_ms"]
    rows.append(
        Row(
            f"2. Durable overhead per step, fresh commit (N={n}, {runs} runs)",
            f"median {fo['median']:.3f} ms, p95 {fo['p95']:.3f} ms "
            f"(≈ {fo['median'] * 1000 / st['ping_rtt_us']['median']:.1f} PINGs)",
            "≤ 0.3 ms median",
            _verdict(fo["median"] <= 0.3),
        )
    )
    fixed = st["fresh_run_ms"]["0"]["median"]
    rows.append(
        Row(
            "   of which: fixed cost of a 0-step run / marginal per step",
            f"{fixed:.2f} ms / {st['fresh_marginal_ms']['median']:.3f} ms",
            "info",
            "-",
        )
    )
    rp = st["replay_us"]
    rows.append(
        Row(
            f"3. Memoized replay per step (N={n}, minus 0-step replay)",
            f"median {rp['median']:.1f} µs, p95 {rp['p95']:.1f} µs "
            f"(slope N→2N: {st['replay_slope_us']:.1f} µs)",
            "≤ 50 µs (median and p95)",
            _verdict(rp["median"] <= 50 and rp["p95"] <= 50),
        )
    )
    db = r["dbos"]
    if db.get("ok"):
        d = db["per_step_ms"]
        rows.append(
            Row(
                f"4. DBOS Transact per step (SQLite, N={db['n']}, {db['runs']} runs)",
                f"median {d['median']:.3f} ms, p95 {d['p95']:.3f} ms; "
                f"Loopwright/DBOS = {fo['median'] / d['median']:.2f} "
                f"(DBOS {d['median'] / fo['median']:.1f}x slower)",
                "ratio (info)",
                "-",
            )
        )
    else:
        rows.append(Row("4. DBOS Transact per step", f"NOT RUN: {db.get('error')}", "-", "-"))
    dt = r.get("dbos_tmpfs")
    if dt and dt.get("ok"):
        dts = dt["per_step_ms"]
        rows.append(
            Row(
                "   DBOS with the SQLite file on tmpfs (no real fsync)",
                f"median {dts['median']:.3f} ms, p95 {dts['p95']:.3f} ms",
                "info",
                "-",
            )
        )
    fa = r.get("fsync_always")
    if fa:
        fam = fa["fresh_overhead_ms"]
        extra = ""
        if db.get("ok"):
            extra = f"; Loopwright/DBOS = {fam['median'] / db['per_step_ms']['median']:.2f}"
        rows.append(
            Row(
                "   Loopwright fresh overhead with appendfsync always",
                f"median {fam['median']:.3f} ms, p95 {fam['p95']:.3f} ms{extra}",
                "info",
                "-",
            )
        )
    tp = r["throughput"]
    rq, lw = tp["rq"], tp["loopwright"]
    rows.append(
        Row(
            f"5. Throughput, 1-step runs (M={tp['m']}, median of {tp['rounds']} rounds)",
            f"RQ {rq['drain_per_s']['median']:.0f} jobs/s, Loopwright "
            f"{lw['drain_per_s']['median']:.0f} runs/s = {tp['drain_ratio'] * 100:.0f}% (drain)",
            "≥ 70% of RQ",
            _verdict(tp["drain_ratio"] >= 0.70),
        )
    )
    rows.append(
        Row(
            "   enqueue / create rate; end-to-end ratio",
            f"RQ {rq['enqueue_per_s']['median']:.0f}/s, Loopwright "
            f"{lw['enqueue_per_s']['median']:.0f}/s; end-to-end "
            f"{tp['end_to_end_ratio'] * 100:.0f}%",
            "info",
            "-",
        )
    )
    for res in r["resume"]:
        rs = res["resume_s"]
        rows.append(
            Row(
                f"6. Resume after SIGKILL, lease_ttl={res['lease_ttl']:g}s "
                f"({len(res['trials'])} kills)",
                f"median {rs['median']:.2f} s, max {rs['max']:.2f} s "
                f"(lease left at kill ≤ {res['lease_left_s']['max']:.2f} s)",
                "≤ 5 s (every kill)",
                _verdict(rs["max"] <= 5.0),
            )
        )
    mem = r["memory"]
    rows.append(
        Row(
            "7. Worker RSS",
            f"{mem['after_first']['rss_kb'] / 1024:.1f} MB after {mem['after_first']['runs']} "
            f"runs, {mem['after_all']['rss_kb'] / 1024:.1f} MB after "
            f"{mem['after_all']['runs']}: +{mem['growth_mb']:.1f} MB",
            "growth ≤ 20 MB",
            _verdict(mem["growth_mb"] <= 20.0),
        )
    )
    return rows


def text_table(rows: list[Row]) -> str:
    """Fixed-width table for the terminal."""
    w0 = max(len(x.name) for x in rows)
    w1 = max(len(x.measured) for x in rows)
    w2 = max(len(x.target) for x in rows)
    lines = [f"{'measurement':<{w0}}  {'result':<{w1}}  {'target':<{w2}}  verdict"]
    lines.append("-" * len(lines[0]))
    lines += [f"{x.name:<{w0}}  {x.measured:<{w1}}  {x.target:<{w2}}  {x.verdict}" for x in rows]
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    """The same table in Markdown."""
    out = ["| Measurement | Result | Target | Verdict |", "| --- | --- | --- | --- |"]
    for x in rows:
        name = x.name.strip()
        if x.name.startswith("   "):
            name = "↳ " + name
        out.append(f"| {name} | {x.measured} | {x.target} | {x.verdict} |")
    return "\n".join(out)


def write_section(path: Path, section: str) -> None:
    """Replace the runner section of ``path`` (between the markers) or append it."""
    write_doc_section(path, "runner", section)


def _mem_total(free_g: str) -> str:
    for line in free_g.splitlines():
        if line.startswith("Mem:"):
            parts = line.split()
            return f"{parts[1]} GiB total, {parts[-1]} GiB available (`free -g`)"
    return "unknown (`free -g` unavailable)"


def _machine(r: dict[str, Any]) -> str:
    m = r["machine"]
    hiredis = "with" if m.get("hiredis") else "without"
    return (
        f"**Machine.** {m['nproc']} CPUs (`nproc`), {m['cpu']}; memory {_mem_total(m['free_g'])}; "
        f"Linux {m['kernel']}; Python {m['python']}; Redis server {m['redis_server']}; "
        f"redis-py {m['redis_py']} ({hiredis} hiredis), RQ {m['rq']}, DBOS Transact {m['dbos']}. "
        f"Load average at start {m['loadavg_start']}, at end {m.get('loadavg_end', '?')} "
        "(a shared machine: other work running at the same time shows up as noise, mostly in "
        "the p95 columns)."
    )


def interpretation(r: dict[str, Any]) -> list[str]:
    """A few sentences per result on what dominates the cost, built from the numbers."""
    st, n = r["steps"], r["steps"]["n"]
    fo = st["fresh_overhead_ms"]["median"]
    marg = st["fresh_marginal_ms"]["median"]
    commit = st["commit_rtt_us"]["median"]
    ping = st["ping_rtt_us"]["median"]
    fixed = st["fresh_run_ms"]["0"]["median"]
    out = [
        f"- **Fresh step.** The marginal cost of a step is {marg * 1000:.0f} µs. Its one Redis "
        f"round trip - the fenced commit script (EVALSHA: HMGET fence/status, HSET the record) "
        f"- takes {commit:.0f} µs when called alone (a PING on the same client: {ping:.0f} µs), "
        f"so the round trip is {commit / (marg * 1000):.0%} of it; the other "
        f"~{max(0.0, marg * 1000 - commit):.0f} µs is Python in `LocalStep.run` (encoding the "
        "output and the record header, decoding the output again, timestamps). A run also "
        f"has a fixed {fixed:.2f} ms (acquire script, cached skill lookup, finish script, "
        f"alarm set-up), {fixed / n * 1000:.1f} µs per step at N={n}: the brief's definition "
        f"gives {fo:.3f} ms per step.",
    ]
    rp, slope = st["replay_us"]["median"], st["replay_slope_us"]
    agree = "agrees" if abs(slope - rp) <= 0.3 * max(rp, 1.0) else "differs (noise)"
    out.append(
        f"- **Replay.** A memoized step makes no Redis call: the acquire script returns every "
        f"checkpoint in its one reply and each step is a dict lookup plus `json.loads` of its "
        f"record. {rp:.1f} µs per step includes moving the N records over the wire and "
        "parsing them in redis-py (its pure-Python parser unless hiredis is installed); the N→2N "
        f"slope ({slope:.1f} µs) {agree}."
    )
    db, fa = r["dbos"], r.get("fsync_always")
    if db.get("ok"):
        d = db["per_step_ms"]["median"]
        text = (
            f"- **DBOS.** DBOS Transact with a SQLite system database (journal_mode="
            f"{db['sqlite_journal_mode']}, synchronous={db['sqlite_synchronous']}: SQLite's "
            f"defaults, DBOS sets neither) costs {d:.2f} ms per step"
        )
        dt = r.get("dbos_tmpfs")
        if dt and dt.get("ok"):
            dtm = dt["per_step_ms"]["median"]
            text += (
                f"; with the same file on tmpfs, where fsync is free, {dtm:.2f} ms, so waiting "
                f"for the disk is about {max(0.0, d - dtm) / d:.0%} of it and the rest is DBOS's "
                "Python and SQLite work per step (each step's result is its own transaction)"
            )
        text += (
            f". Loopwright's overhead is {fo / d:.2f}x DBOS's ({d / fo:.1f} times less). "
            "Not equal durability: with `appendfsync everysec` Redis normally write()s the AOF "
            "before replying, so a crash of the Redis process or of a worker loses no "
            "acknowledged checkpoint (except while a slow disk makes Redis postpone that write, "
            "up to 2 s), but a power loss or kernel crash can lose about the last second."
        )
        if fa:
            fam = fa["fresh_overhead_ms"]["median"]
            text += (
                f" With `appendfsync always` (fsync per write, like SQLite here) Loopwright "
                f"costs {fam:.3f} ms per step, {fam / d:.2f}x DBOS."
            )
        out.append(text)
    else:
        out.append(f"- **DBOS.** Not measured: {db.get('error')}")
    tp = r["throughput"]
    rq, lw = tp["rq"], tp["loopwright"]
    rq_ms = 1000 / rq["drain_per_s"]["median"]
    lw_ms = 1000 / lw["drain_per_s"]["median"]
    out.append(
        f"- **Throughput.** RQ itself is the ceiling: its SimpleWorker spends {rq_ms:.2f} ms per "
        f"job ({rq['commands_per_job']['median']:.0f} Redis commands of job bookkeeping: "
        f"dequeue, execution records, heartbeats, registries, clean-up). A Loopwright run "
        f"takes {lw_ms:.2f} ms ({lw['commands_per_job']['median']:.0f} commands, Lua-internal "
        f"ones counted), a difference of {lw_ms - rq_ms:+.2f} ms, hence "
        f"{tp['drain_ratio']:.0%} of RQ's rate. What a run adds to its RQ job is three "
        "script round trips (acquire, one checkpoint commit, finish), decoding the run record "
        "and the skill call. Creating a run "
        f"({lw['enqueue_per_s']['median']:.0f}/s) vs RQ's enqueue "
        f"({rq['enqueue_per_s']['median']:.0f}/s): the run record, its indexes and the RQ job "
        "go to Redis in one MULTI/EXEC."
    )
    parts = []
    for res in r["resume"]:
        ready = res["worker_ready_s"].get("median", 0.0) if res["worker_ready_s"] else 0.0
        left = res["lease_left_s"]["median"]
        dom = "the new worker's start-up" if ready > left else "waiting for the lease to expire"
        parts.append(
            f"at lease_ttl={res['lease_ttl']:g} s the lease had {left:.2f} s left at the kill "
            f"(median), the new worker registered {ready:.2f} s after it and the step restarted "
            f"{res['after_expiry_s']['median']:.2f} s after the lease expired (reaper tick, "
            f"re-queue, dequeue), so {dom} dominates"
        )
    reaper = r["resume"][0]["reaper_interval"]
    out.append(
        "- **Resume.** Time to resume = the lease left at the kill (between TTL/2 and TTL: the "
        f"keeper renews every TTL/2) + up to one reaper tick ({reaper:g} s) + the dequeue of "
        f"the re-queued job (at the front of the queue); {'; '.join(parts)}. Plain RQ alone "
        "would take minutes, if it resumed at all: a SimpleWorker job with `timeout=-1` is "
        "only considered abandoned once its StartedJobRegistry entry expires, after "
        "DEFAULT_WORKER_TTL = 420 s (`SimpleWorker.get_heartbeat_ttl`, rq 3.0), and is only "
        "handled by a worker's maintenance pass (every 600 s), which re-queues it only if it "
        "was enqueued with retries left and otherwise moves it to the FailedJobRegistry "
        "(read from RQ's source; not measured here)."
    )
    mem = r["memory"]
    series = ", ".join(f"{k}: {v / 1024:.1f}" for k, v in mem["series"])
    out.append(
        f"- **Memory.** Worker RSS after start {mem['idle_kb'] / 1024:.1f} MB; by runs "
        f"completed (MB): {series}. Growth {mem['growth_mb']:+.1f} MB between "
        f"{mem['after_first']['runs']} and {mem['after_all']['runs']} runs."
    )
    return out


METHOD = """### Method

- One process runs everything against one private `redis-server` (loopback TCP, temp dir,
  `appendonly yes`, `appendfsync everysec` - the production default -, no RDB snapshots),
  started and stopped by the benchmark.
- Steps 2-3: `Executor(rt).execute(run_id)` in-process. For each repetition a 0-step, an
  N-step and a 2N-step run of the same skill (N from the run input) are executed fresh, then
  re-executed after setting the run hash's `status` back to `queued` (bench-only; the
  checkpoints stay). Fresh overhead per step = (T(N) - T(N plain calls of the same
  function)) / N per run. Replay per step = (T_replay(N) - median T_replay(0)) / N: the 0-step
  replay has the same acquire, skill lookup and finish, so the difference is the N memoized
  steps; the N→2N slope is a cross-check.
- DBOS: `@DBOS.workflow()` calling N `@DBOS.step()`s, SQLite system database in a temp dir,
  in a child process; per step = (T(workflow) - T(N plain calls)) / N per run.
- Throughput: M jobs of a trivial function enqueued one by one (`timeout=-1`,
  `result_ttl=0`, JSON serializer - Loopwright's own dispatch options) and drained by an
  in-process burst `SimpleWorker`; then M runs of a 1-step skill created with
  `rt.runs.create` and drained by `run_worker(rt, burst=True)`; rounds alternate, medians.
- Resume: `loopwright scheduler` and `loopwright worker` processes; the worker is SIGKILLed
  (its process group) inside step 2, at delays spread over one renewal period (the first
  right after step 2 starts, the worst case); a second worker is started right after. Time =
  the step-2 marker timestamp written by the new worker's pid - the kill time.
- Memory: one `loopwright worker` process; VmRSS from `/proc/<pid>/status` after each batch
  of 1-step runs has completed."""


def markdown_section(r: dict[str, Any], rows: list[Row]) -> str:
    """The "Durable runner (issue 2)" section: machine, command, table, interpretation."""
    m = r["machine"]
    p = r["profile"]
    lines = [
        "## Durable runner (issue 2)",
        "",
        f"Measured {m['date']} with `{r['command']}` ({p['name']} profile, "
        f"{r['elapsed_s']:.0f} s). Every number below comes from that one run; ratios are "
        "against baselines measured in the same run. Redis: a private `redis-server` with "
        "`appendonly yes` and `appendfsync everysec` (the production default).",
        "",
        _machine(r),
        "",
        markdown_table(rows),
        "",
        "### What dominates each cost",
        "",
        *interpretation(r),
        "",
        METHOD,
    ]
    return "\n".join(lines)
