"""Raft layer: PySyncObj wiring, the LMDB journal, snapshots, membership, the tick loop."""
