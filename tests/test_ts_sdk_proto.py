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


def _proto_enum(name: str, prefix: str) -> dict[int, str]:
    import re
    text = (SOURCE / "timers.proto").read_text()
    body = re.search(r"enum %s \{(.*?)\n\}" % name, text, re.S).group(1)
    return {int(v): k[len(prefix):] for k, v in re.findall(r"\b(%s\w+) = (\d+);" % prefix, body)}


def test_typescript_sdk_enums_name_every_value_of_the_contract():
    """types.ts lists every TimerState and EventKind of timers.proto, with the wire numbers
    (EventKind's are not contiguous), so a newer kind never shows as UNSPECIFIED in Node."""
    import re
    ts = (ROOT / "sdk" / "typescript" / "src" / "types.ts").read_text()
    names = lambda const: re.findall(r'"(\w+)"', re.search(r"export const %s = \[(.*?)\] as const" % const,
                                                           ts, re.S).group(1))
    kinds = _proto_enum("EventKind", "EVENT_KIND_")
    states = _proto_enum("TimerState", "TIMER_STATE_")
    assert names("EVENT_KINDS") == [kinds[n] for n in sorted(kinds)]
    assert names("TIMER_STATES") == [states[n] for n in sorted(states)] and sorted(states) == list(range(len(states)))
    numbers = re.search(r"EVENT_KIND_NUMBERS.*?\{(.*?)\}\);", ts, re.S).group(1)
    assert {int(n): k for n, k in re.findall(r'(\d+): "(\w+)"', numbers)} == kinds
