"""`minoots bench ...`: benchmarks. The work lives in `minoots.bench`."""
from __future__ import annotations

import json

import click

from minoots.bench import kernel as kernel_bench
from minoots.bench import occurrences as occurrences_bench
from minoots.bench import load as load_bench
from minoots.bench import wheel as wheel_bench
from minoots.raft.store import DEFAULT_SYNC, SYNC_POLICIES


@click.group()
def bench() -> None:
    """Run benchmarks."""


@bench.command("wheel")
@click.option("--timers", type=click.IntRange(min=1), default=wheel_bench.DEFAULT_TIMERS, show_default=True,
              help="Number of timers to insert.")
@click.option("--span-ms", type=click.IntRange(min=1), default=wheel_bench.DEFAULT_SPAN_MS, show_default=True,
              help="Deadlines are spread uniformly over this many milliseconds.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the full report as JSON to FILE (parent directories are created).",
    metavar="FILE",
)
@click.option("--seed", type=int, default=wheel_bench.DEFAULT_SEED, show_default=True, help="Workload RNG seed.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run each peer this many times and keep each phase's best time (for noisy machines).",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not print progress to stderr.")
def wheel(timers: int, span_ms: int, json_path: str | None, seed: int, repeat: int, quiet: bool) -> None:
    """Timing wheel vs heapq vs asyncio call_at: insert, cancel half, reschedule 10%, expire.

    Prints a table of ops/s per phase, speed-ups and bytes per timer, and checks
    that every peer expires the same timers in the same order.
    """
    progress = None if quiet else (lambda msg: click.echo(msg, err=True))
    if json_path:
        try:
            wheel_bench.check_output_path(json_path)
        except OSError as exc:
            raise click.ClickException(f"cannot write {json_path}: {exc.strerror or exc}") from None
    try:
        report = wheel_bench.run(timers, span_ms, seed, repeat=repeat, progress=progress)
    except wheel_bench.WheelBenchError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(wheel_bench.format_report(report))
    if json_path:
        try:
            wheel_bench.write_json(report, json_path)
        except OSError as exc:
            raise click.ClickException(f"cannot write {json_path}: {exc.strerror or exc}") from None
        if not quiet:
            click.echo(f"wrote {json_path}", err=True)


@bench.command("occurrences")
@click.option("--count", type=click.IntRange(min=1), default=occurrences_bench.DEFAULT_COUNT, show_default=True,
              help="Occurrences of one every-1s webhook schedule to apply.")
def occurrences(count: int) -> None:
    """A recurring webhook timer's occurrences: apply cost and what each ended occurrence timer holds."""
    click.echo(occurrences_bench.format_table(occurrences_bench.run(count)))


@bench.command("kernel")
@click.option("--timers", type=click.IntRange(min=1), default=kernel_bench.DEFAULT_TIMERS, show_default=True,
              help="Outstanding timers to build the state with.")
@click.option("--payload", type=click.IntRange(0, 65536), default=0, show_default=True,
              help="Payload bytes per timer.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the report as JSON to FILE.")
@click.option("--path", type=click.Choice(["columns", "specs"]), default="columns", show_default=True,
              help="Create through the column path a replica takes for plain batches (State.create_plain) "
                   "or through State.create with a TimerSpec per timer.")
def kernel(timers: int, payload: int, json_path: str | None, path: str) -> None:
    """One node's state machine at N outstanding timers: bytes/timer, creates/s, snapshot costs,
    and a replica's apply cost per timer for the column create record and the general one."""
    report = kernel_bench.run(timers, payload, progress=lambda msg: click.echo(msg, err=True), path=path)
    click.echo(kernel_bench.format_table(report))
    if json_path:
        try:
            with open(json_path, "w") as f:
                json.dump(report, f, indent=2)
        except OSError as exc:
            raise click.ClickException(f"cannot write {json_path}: {exc.strerror or exc}") from None


@bench.command("audit")
@click.option("--timers", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Timers whose events (created and armed, two each) the ledger writes.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Timers per apply batch (the events one listener call hands the ledger).")
@click.option("--repeat", type=click.IntRange(1, 20), default=2, show_default=True,
              help="Runs of each layout, alternating.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per run instead of the table.")
def audit_bench(timers: int, batch: int, repeat: int, as_json: bool) -> None:
    """The audit ledger alone: microseconds per timer event from the listener's hand-off to
    written (hashed, signed, in LMDB), and the writer thread's CPU per event, for one record
    per event and one timer.events record per apply batch, in the same run."""
    from minoots.bench import audit as audit_bench_mod

    rows = audit_bench_mod.run(timers, batch, repeat=repeat)
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
    else:
        click.echo(audit_bench_mod.format_table(rows))


class _Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return load_bench.parse_duration(value)
        except load_bench.LoadBenchError as exc:
            self.fail(str(exc), param, ctx)


@bench.command("load")
@click.option("--timers", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Timers to load (batched) and keep outstanding until they fire.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="Cluster size.")
@click.option("--window", type=_Duration(), default="600s", show_default=True,
              help="Deadlines are spread uniformly over this long (e.g. 120s, 10m).")
@click.option("--clients", type=click.IntRange(min=1), default=8, show_default=True,
              help="Concurrent loading clients (threads, one SDK Client each).")
@click.option("--batch", type=click.IntRange(1, 10_000), default=1000, show_default=True,
              help="Timers per create_many (one replicated command).")
@click.option("--payload", type=click.IntRange(0, 65536), default=64, show_default=True, help="Payload bytes per timer.")
@click.option("--out", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write results.json and PNG plots here.")
@click.option("--peers", default="", metavar="LIST", help="Comma-separated peers to run too: redis, etcd.")
@click.option("--burst", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also load this many timers due within the same second (mid-window).")
@click.option("--single-seconds", type=click.FloatRange(0.5, 600), default=5.0, show_default=True,
              help="Length of the single-create phase (16 threads).")
@click.option("--lead", type=_Duration(), default=None,
              help="Time from the load's start to the first deadline (default: estimated load time + margin).")
@click.option("--failover", is_flag=True, help="SIGKILL the leader a third of the way into the window.")
@click.option("--sync", type=click.Choice(SYNC_POLICIES), default=DEFAULT_SYNC, show_default=True)
@click.option("--etcd-timers", type=click.IntRange(min=1), default=None,
              help="Timers for the etcd peer (one lease each; default: min(timers + burst, 20000)).")
@click.option("--install-peers/--no-install-peers", default=True, show_default=True,
              help="apt-get a missing peer's Debian package (etcd-server, redis-server) when allowed to.")
@click.option("--stress", type=click.FloatRange(min=0, min_open=True), default=None, metavar="CPU_SECONDS",
              help="Run a competing CPU hog (one busy process) for this many seconds from the load's start, "
                   "as on a shared host.")
@click.option("--cluster", "cluster_addrs", default=None, metavar="HOST:PORT,...",
              help="Load this running cluster (its nodes' gRPC addresses; the SDK's token) instead of starting "
                   "one: nothing is started or killed, and the table says which rows it cannot fill.")
@click.option("--metrics", "metrics_addrs", default=None, metavar="HOST:PORT,...",
              help="With --cluster: the nodes' /metrics addresses, to cross-check the counts against.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def load(timers, nodes, window, clients, batch, payload, out, peers, burst, single_seconds, lead, failover,
         sync, etcd_timers, install_peers, stress, cluster_addrs, metrics_addrs, quiet) -> None:
    """Load N timers into a local cluster through the gRPC API, let them fire, measure.

    Create throughput (batched and single), node RSS and bytes/timer, snapshot
    size and time, follower restart recovery, fire lateness percentiles; checks
    that every timer fires exactly once (exit status 1 otherwise). If the
    harness's own watcher fails, the verdict says "observer failed" and
    correctness is judged from the nodes' state (every timer, paged ListTimers).
    At the end the counts are cross-checked against each node's /metrics.
    """
    from minoots.bench.external import ExternalClusterError, parse_addresses

    peer_list = tuple(p.strip() for p in peers.split(",") if p.strip())
    say = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    try:
        if metrics_addrs is not None and cluster_addrs is None:
            raise click.UsageError("--metrics goes with --cluster (a local cluster's are known)")
        cluster_list = parse_addresses(cluster_addrs, "--cluster") if cluster_addrs is not None else None
        metrics_list = parse_addresses(metrics_addrs, "--metrics") if metrics_addrs is not None else None
        report = load_bench.run(timers, nodes, window, clients, batch, payload, out, peer_list, burst,
                                single_seconds, lead, failover, sync, progress=not quiet, say=say,
                                etcd_timers=etcd_timers, install_peers=install_peers, stress=stress,
                                cluster_addrs=cluster_list, metrics_addrs=metrics_list)
    except ExternalClusterError as exc:
        raise click.ClickException(str(exc)) from None
    except load_bench.LoadBenchError as exc:
        raise click.ClickException(str(exc)) from None
    report.pop("_lateness_samples", None)
    click.echo(load_bench.format_table(report))
    c = report["correctness"]
    if not c["ok"]:
        if c.get("judged_from") is None:
            raise click.ClickException(f"correctness could not be judged: observer {c.get('observer')} "
                                       f"({c.get('observer_error')}) and the nodes' state could not be read "
                                       f"({c.get('state_error')})")
        raise click.ClickException("correctness check FAILED: some timers were lost, duplicated or early")


@bench.command("grpc-creates")
@click.option("--seconds", type=click.FloatRange(0.5, 3600), default=10.0, show_default=True,
              help="Length of each of the two loads.")
@click.option("--to", type=click.Choice(["leader", "follower"]), default="leader", show_default=True,
              help="Which node the clients send to.")
@click.option("--sync", type=click.Choice(SYNC_POLICIES), default=DEFAULT_SYNC, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per load instead of the table.")
def grpc_creates(seconds: float, to: str, sync: str, as_json: bool) -> None:
    """Create throughput through the raw gRPC API on a local 3-node cluster: batched
    CreateTimers (4 clients x 1000) then single CreateTimer (16 clients); a table with
    one row per load (timers/s, request P50/P99, Raft entries, requests per entry)."""
    from minoots.bench import grpc_creates as grpc_bench

    if as_json:
        grpc_bench.run(seconds, to, sync, report=lambda res: click.echo(json.dumps(res)))
        return
    results = grpc_bench.run(seconds, to, sync, report=lambda res: click.echo(
        f"{res['clients']} clients x {res['batch']}: {res['timers_per_s']} timers/s", err=True))
    click.echo(grpc_bench.format_table(results))


@bench.command("single-creates")
@click.option("--seconds", type=click.FloatRange(0.5, 3600), default=10.0, show_default=True,
              help="Length of each load (MINOOTS, then Redis).")
@click.option("--callers", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Concurrent callers: threads of one SDK Client (Redis: one connection) each.")
@click.option("--repeat", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Runs, each on a fresh cluster, each followed by the Redis peer.")
@click.option("--sync", type=click.Choice(SYNC_POLICIES), default=DEFAULT_SYNC, show_default=True)
@click.option("--no-redis", is_flag=True, help="Leave out the Redis peer.")
@click.option("--json", "json_path", default=None, help="Also write the rows as JSON here.")
def single_creates(seconds: float, callers: int, repeat: int, sync: str, no_redis: bool,
                   json_path: str | None) -> None:
    """Single creates/s from many callers on a fresh local 3-node cluster, then Redis's single
    ZADD from Python in the same run; a table with latency, group commit (requests per Raft
    entry) and CPU milliseconds per create of every process."""
    from minoots.bench import single_creates as single_bench

    rows = single_bench.run(seconds, callers, repeat, sync, redis=not no_redis,
                            say=lambda m: click.echo(m, err=True))
    click.echo(single_bench.format_table(rows))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(rows, fh, indent=1)


@bench.command("delivery")
@click.option("--timers", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True)
@click.option("--window", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Deadlines spread uniformly over this many seconds.")
@click.option("--fail-first", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of timers whose first attempt the receiver answers 500.")
@click.option("--sync", type=click.Choice(SYNC_POLICIES), default=DEFAULT_SYNC, show_default=True)
@click.option("--json", "json_path", default=None, help="Also write the results as JSON here.")
def delivery(timers: int, window: float, fail_first: float, sync: str, json_path: str | None) -> None:
    """Webhook delivery on a local 3-node cluster to a receiver on 127.0.0.1: lateness at the
    receiver P50/P95/P99, deliveries/s, attempts per success, delivered fraction (a table)."""
    from minoots.bench import delivery as delivery_bench

    delivery_bench.run(timers, window, fail_first, sync, report=click.echo, json_path=json_path)


@bench.command("queue")
@click.option("--timers", type=click.IntRange(1, 1_000_000), default=2_000, show_default=True)
@click.option("--window", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Deadlines spread uniformly over this many seconds.")
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Worker threads, each leasing one timer at a time and acking it.")
@click.option("--sync", type=click.Choice(SYNC_POLICIES), default=DEFAULT_SYNC, show_default=True)
@click.option("--json", "json_path", default=None, help="Also write the results as JSON here.")
@click.option("--plot", "plot_path", default=None, help="Also draw fire → lease per timer (PNG) here.")
def queue(timers: int, window: float, workers: int, sync: str, json_path: str | None,
          plot_path: str | None) -> None:
    """Pull-queue delivery on a local 3-node cluster: fire → lease latency P50/P95/P99 with
    WORKERS long-polling workers, leases/s, no timer leased twice (a table)."""
    from minoots.bench import queue as queue_bench

    queue_bench.run(timers, window, workers, sync, report=click.echo, json_path=json_path, plot_path=plot_path)


@bench.command("soak")
@click.option("--rate", default="1000/s", show_default=True, metavar="N/s",
              help="Timers created per second (e.g. 1000/s, 60000/m).")
@click.option("--minutes", type=click.FloatRange(0, 1440, min_open=True), default=10.0, show_default=True,
              help="Length of the run.")
@click.option("--sample-every", type=_Duration(), default="60s", show_default=True,
              help="Time between two rows of the table (RSS, snapshot, timers held).")
@click.option("--retention", type=_Duration(), default="10s", show_default=True,
              help="The cluster's default retention of ended timers (0s: removed when they settle).")
@click.option("--delay", type=_Duration(), default="1s", show_default=True,
              help="Each timer fires this long after its create, and settles at once (no ack).")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True, help="Cluster size.")
@click.option("--batches", type=click.IntRange(1, 100), default=10, show_default=True,
              help="create_many calls per second (the rate is split over them).")
@click.option("--events-budget", default="16MiB", show_default=True,
              help="Each node's event history budget (it has its own retention; its map counts in RSS).")
@click.option("--audit-keep", type=click.IntRange(1000), default=20_000, show_default=True,
              help="Each node's audit ledger bound in facts (it has its own retention; its map counts in RSS).")
@click.option("--compaction-seconds", type=click.FloatRange(1.0), default=60.0, show_default=True,
              help="Each node compacts its Raft log (LMDB, counts in RSS) at least this often.")
@click.option("--out", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Write results.json and soak.png here (default: a new temp dir).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
@click.option("--quiet", "-q", is_flag=True, help="No per-sample progress lines.")
def soak(rate, minutes, sample_every, retention, delay, nodes, batches, events_budget, audit_keep,
         compaction_seconds, out, as_json, quiet) -> None:
    """Create, fire, settle and purge at a steady rate on a local cluster; print per
    sample (default: per minute) each node's RSS, the snapshot size and the timers
    held, plot them, and judge: RSS at the end within 10 % of minute 3 and timers held
    bounded (exit status 1 otherwise)."""
    from minoots.bench import soak as soak_bench

    say = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    try:
        report = soak_bench.run(soak_bench.parse_rate(rate), minutes, sample_every, retention, delay, nodes,
                                batches, events_budget, out, say, audit_keep, compaction_seconds)
    except soak_bench.SoakError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(report, indent=2) if as_json else soak_bench.format_table(report))
    if not report["verdict"]["ok"]:
        raise click.ClickException("soak verdict: FAIL")


@bench.command("snapshot-stall")
@click.option("--timers", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Timers in the state that is snapshotted.")
@click.option("--payload", type=click.IntRange(0, 65536), default=64, show_default=True, help="Payload bytes per timer.")
@click.option("--mode", "modes", type=click.Choice(["legacy", "chunked"]), multiple=True,
              help="Writers to measure (default: both, legacy first).")
@click.option("--repeat", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Measure every writer this many times (noisy machines).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the report as JSON to FILE.")
def snapshot_stall(timers: int, payload: int, modes: tuple, repeat: int, json_path: str | None) -> None:
    """Worst journal append and Raft-thread stall while a large snapshot is written: the
    write before issue 15 (legacy) and the chunked one, same process, same session."""
    from minoots.bench import snapshot_stall as stall_bench

    report = stall_bench.run(timers, payload, modes or stall_bench.MODES, repeat,
                             progress=lambda msg: click.echo(msg, err=True))
    click.echo(stall_bench.format_table(report))
    if json_path:
        try:
            with open(json_path, "w") as f:
                json.dump(report, f, indent=2)
        except OSError as exc:
            raise click.ClickException(f"cannot write {json_path}: {exc.strerror or exc}") from None
