"""The SDK's enums against the wire's: every enum generated from proto/minoots/v1 into
`minoots.v1` has an SDK twin with the same names and numbers, and the SDK has no enum
of its own (the SDK's twin of `minoots.api.convert._check_enums_match`, which checks
the kernel's). A value added to a .proto and not to the SDK fails here; the SDK would
otherwise turn it into UNSPECIFIED.
"""
from __future__ import annotations

import enum
import importlib
import pkgutil
import re

import pytest

import minoots
import minoots.v1
from minoots.api import types as sdk_types
from minoots.api.types import CatchUpPolicy, EventKind, OverlapPolicy, TimerState

# proto enum (full name) -> the SDK's enum. A new proto enum must be added here.
SDK_ENUMS: dict[str, type[enum.IntEnum]] = {
    "minoots.v1.TimerState": TimerState,
    "minoots.v1.EventKind": EventKind,
    "minoots.v1.CatchUpPolicy": CatchUpPolicy,
    "minoots.v1.OverlapPolicy": OverlapPolicy,
}


def proto_enums() -> dict:
    """Every enum (top-level or nested in a message) of every generated minoots.v1 module."""
    found = {}

    def nested(messages):
        for m in messages:
            for e in m.enum_types:
                found[e.full_name] = e
            nested(m.nested_types)

    for info in pkgutil.iter_modules(minoots.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        fd = importlib.import_module(f"minoots.v1.{info.name}").DESCRIPTOR
        for e in fd.enum_types_by_name.values():
            found[e.full_name] = e
        nested(fd.message_types_by_name.values())
    return found


def wire_prefix(enum_name: str) -> str:
    """TimerState -> TIMER_STATE_ (the style guide's prefix of an enum's values)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", enum_name).upper() + "_"


def mismatches(wire: dict[str, int], prefix: str, sdk: type[enum.IntEnum]) -> list[str]:
    """What differs between the wire's values (name -> number) and the SDK enum's members."""
    out = []
    sdk_members = {m.name: m.value for m in sdk}
    wire_members = {}
    for name, number in wire.items():
        if not name.startswith(prefix):
            out.append(f"{name} lacks the prefix {prefix}")
            continue
        wire_members[name[len(prefix):]] = number
    for name, number in wire_members.items():
        if name not in sdk_members:
            out.append(f"{prefix}{name} = {number} is on the wire but not in the SDK's {sdk.__name__}")
        elif sdk_members[name] != number:
            out.append(f"{sdk.__name__}.{name} is {sdk_members[name]} in the SDK, {number} on the wire")
    for name, number in sdk_members.items():
        if name not in wire_members:
            out.append(f"{sdk.__name__}.{name} = {number} is in the SDK but not on the wire")
    return out


def test_every_proto_enum_has_an_sdk_enum():
    assert set(proto_enums()) == set(SDK_ENUMS)


@pytest.mark.parametrize("full_name", sorted(SDK_ENUMS))
def test_sdk_enum_matches_the_proto(full_name):
    desc = proto_enums()[full_name]
    wire = {v.name: v.number for v in desc.values}
    assert mismatches(wire, wire_prefix(desc.name), SDK_ENUMS[full_name]) == []


def test_the_sdk_has_no_enum_the_wire_lacks():
    exposed = {obj for mod in (sdk_types, minoots) for obj in vars(mod).values()
               if isinstance(obj, type) and issubclass(obj, enum.Enum) and obj.__module__.startswith("minoots")}
    assert exposed == set(SDK_ENUMS.values())


def test_the_check_catches_a_value_added_to_the_proto_only():
    desc = proto_enums()["minoots.v1.TimerState"]
    wire = {v.name: v.number for v in desc.values}
    wire["TIMER_STATE_PAUSED"] = max(wire.values()) + 1
    assert mismatches(wire, "TIMER_STATE_", TimerState) == [
        f"TIMER_STATE_PAUSED = {wire['TIMER_STATE_PAUSED']} is on the wire but not in the SDK's TimerState"]
    renumbered = {v.name: v.number for v in desc.values}
    renumbered["TIMER_STATE_ARMED"] = 99
    assert mismatches(renumbered, "TIMER_STATE_", TimerState) == [
        "TimerState.ARMED is 2 in the SDK, 99 on the wire"]
