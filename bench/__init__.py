"""Benchmarks and load harnesses for MINOOTS.

Each is run through the CLI, ``minoots bench <name>`` (``wheel``, ``kernel``,
``load``, ``grpc-creates``, ``audit``); the CLI only parses arguments and calls the
functions here.

- ``bench.wheel``: the compiled timing wheel against the schedulers a Python
  user would otherwise reach for (``heapq`` with lazy deletion, asyncio's
  ``loop.call_at`` timer heap).
- ``bench.load``: end to end on a local cluster: load N timers through the
  SDK, let them fire, measure create throughput, RSS, snapshot, restart
  recovery and fire lateness, and check every timer fires exactly once;
  ``bench.load_redis`` is its Redis delay-queue peer, ``bench.load_etcd`` its
  etcd peer (a lease with a TTL and a key per timer, 3 members).
"""
