"""The TypeScript SDK's copies of the .proto files (sdk/typescript/proto, written by its
`npm run sync-proto`, shipped in its package) are the repository's, byte for byte: a
changed .proto must be synced (the copies are never edited by hand)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "proto" / "minoots" / "v1"
COPIES = ROOT / "sdk" / "typescript" / "proto" / "minoots" / "v1"


def test_typescript_sdk_protos_match_the_contract():
    source = {p.name: p.read_bytes() for p in SOURCE.glob("*.proto")}
    copies = {p.name: p.read_bytes() for p in COPIES.glob("*.proto")}
    assert source, "no .proto files in proto/minoots/v1"
    drifted = sorted(n for n in source.keys() | copies.keys() if source.get(n) != copies.get(n))
    assert not drifted, (f"sdk/typescript/proto drifted from proto/minoots/v1 in {drifted}: "
                         "run `npm run sync-proto` in sdk/typescript")
