#!/usr/bin/env python3
"""Merge `ops/mutation.py --shard K/N` results (from clones of the repository) into one
table: python ops/mutation_merge.py DIR_OR_JSON...  (prints the per-target counts)."""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path


def main(paths: list[str]) -> None:
    files = [f for p in map(Path, paths) for f in (sorted(p.glob("*.json")) if p.is_dir() else [p])]
    by_target: dict[str, list] = defaultdict(list)
    for f in files:
        r = json.loads(f.read_text())
        by_target[r["target"]].append(r)
    print("| target | mutants | killed | survived | timeout | detected |\n| --- | --- | --- | --- | --- | --- |")
    for name, results in by_target.items():
        seen = {}
        for r in results:
            for m in r["mutants"]:
                seen[(m["line_number"], m["index"])] = m["status"]
        counts = {s: sum(v == s for v in seen.values()) for s in ("killed", "survived", "timeout")}
        total = len(seen)
        score = 100.0 * (counts["killed"] + counts["timeout"]) / max(1, total)
        done = all(r.get("complete", True) for r in results)
        print(f"| {name}{'' if done else ' (unfinished)'} | {total} | {counts['killed']} | {counts['survived']} | "
              f"{counts['timeout']} | {score:.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1:])
