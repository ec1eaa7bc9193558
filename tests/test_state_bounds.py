"""kernel/validate.py at each bound: the last accepted value, the first refused one, and
the rule each refusal states (it reaches clients verbatim as the INVALID_ARGUMENT text)."""
from __future__ import annotations

import pytest

from minoots.kernel import MAX_TIME, InvalidArgument
from minoots.kernel import validate as v

DNS = ".".join(["a" * 63] * 3) + "." + "b" * 61          # 253 characters, a valid DNS subdomain


@pytest.mark.parametrize("check, value", [
    (lambda x: v.check_time("t", x), 0), (lambda x: v.check_time("t", x), MAX_TIME),
    (lambda x: v.check_delta("d", x), -MAX_TIME), (lambda x: v.check_delta("d", x), MAX_TIME),
    (lambda x: v.check_seq("s", x), 1), (lambda x: v.check_seq("s", x), 2**63 - 1),
    (lambda x: v.check_name("n", x), "n" * v.MAX_NAME_LEN),
    (lambda x: v.check_idempotency_key("k", x), "k" * v.MAX_IDEMPOTENCY_KEY_LEN),
    (lambda x: v.check_idempotency_key("k", x), "k"),
    (lambda x: v.check_bytes("p", x, 4), b"1234"),
])
def test_the_last_accepted_value_passes_unchanged(check, value):
    assert check(value) == value


def test_label_bounds_are_inclusive():
    assert len(DNS) == v.MAX_LABEL_PREFIX_LEN
    key, name = DNS + "/k", "n" * v.MAX_LABEL_KEY_LEN
    labels = {key: "x" * v.MAX_LABEL_VALUE_LEN, name: ""}
    assert v.check_labels("l", labels) == ((key, "x" * v.MAX_LABEL_VALUE_LEN), (name, ""))
    assert len(v.check_labels("l", {f"k{i}": "" for i in range(v.MAX_LABELS)})) == v.MAX_LABELS


@pytest.mark.parametrize("check, value, field, rule", [
    (lambda x: v.check_time("t", x), 1.0, "t", "must be an int, not float"),
    (lambda x: v.check_time("t", x), MAX_TIME + 1, "t", f"must be within 0..{MAX_TIME} ms, got {MAX_TIME + 1}"),
    (lambda x: v.check_delta("d", x), -MAX_TIME - 1, "d",
     f"must be within -{MAX_TIME}..{MAX_TIME} ms, got {-MAX_TIME - 1}"),
    (lambda x: v.check_delta("d", x), MAX_TIME + 1, "d", f"must be within -{MAX_TIME}..{MAX_TIME} ms, got {MAX_TIME + 1}"),
    (lambda x: v.check_seq("s", x), 0, "s", "must be a positive 64-bit int, got 0"),
    (lambda x: v.check_seq("s", x), 2**63, "s", f"must be a positive 64-bit int, got {2**63}"),
    (lambda x: v.check_name("n", x), 7, "n", "must be a str, not int"),
    (lambda x: v.check_name("n", x), "n" * (v.MAX_NAME_LEN + 1), "n",
     f"must be at most {v.MAX_NAME_LEN} characters, got {v.MAX_NAME_LEN + 1}"),
    (lambda x: v.check_name("n", x), "\ud800", "n", "must be valid Unicode (no lone surrogates)"),
    (lambda x: v.check_bytes("p", x, 4), "text", "p", "must be bytes, not str"),
    (lambda x: v.check_bytes("p", x, 4), b"12345", "p", "must be at most 4 bytes, got 5"),
    (lambda x: v.check_id("i", x), "a b", "i", "must be 1..128 characters of [A-Za-z0-9._:~-]"),
    (lambda x: v.check_tenant("t", x), "a b", "t", "must be 1..64 characters of [A-Za-z0-9._:~-]"),
    (lambda x: v.check_idempotency_key("k", x), "", "k", "must be None or 1..128 characters, got 0"),
    (lambda x: v.check_idempotency_key("k", x), "k" * 129, "k", "must be None or 1..128 characters, got 129"),
    (lambda x: v.check_labels("l", x), {"k": 1}, "l['k']", "value must be a str, not int"),
    (lambda x: v.check_labels("l", x), {"k": "x" * 257}, "l['k']", "value must be at most 256 characters, got 257"),
    (lambda x: v.check_labels("l", x), {1: "x"}, "l", "keys must be str, not int"),
    (lambda x: v.check_labels("l", x), {"n" * 64: ""}, "l[" + repr("n" * 64) + "]",
     "key name must be 1..63 characters of [A-Za-z0-9._-], starting and ending alphanumeric, after an "
     "optional DNS-subdomain prefix and '/'"),
    (lambda x: v.check_labels("l", x), {"c" + DNS + "/k": ""}, "l[" + repr("c" + DNS + "/k") + "]",
     "key prefix must be a lowercase DNS subdomain of at most 253 characters"),
    (lambda x: v.check_labels("l", x), [("k", "v")], "l", "must be a mapping of str to str, not list"),
    (lambda x: v.check_labels("l", x), {f"k{i}": "" for i in range(65)}, "l", "must have at most 64 entries, got 65"),
    (lambda x: v.check_bool("b", x), 1, "b", "must be a bool, not int"),
    (lambda x: v.check_batch("s", x), iter(()), "s", "must be a list or tuple, not tuple_iterator"),
    (lambda x: v.check_batch("s", x), [0] * (v.MAX_BATCH + 1), "s",
     f"must hold at most {v.MAX_BATCH} items, got {v.MAX_BATCH + 1}"),
])
def test_the_first_refused_value_names_its_field_and_rule(check, value, field, rule):
    with pytest.raises(InvalidArgument) as err:
        check(value)
    assert (err.value.field, err.value.rule) == (field, rule)


PLAIN = dict(tenant="t", timer_id="i", fire_at=0, name="", payload=b"", labels=None, action=b"", key=None,
             ack_required=False)


@pytest.mark.parametrize("change, plain", [
    ({}, True), ({"fire_at": MAX_TIME}, True), ({"fire_at": MAX_TIME + 1}, False), ({"fire_at": -1}, False),
    ({"name": "n" * v.MAX_NAME_LEN}, True), ({"name": "n" * (v.MAX_NAME_LEN + 1)}, False), ({"name": "é"}, False),
    ({"payload": b"p" * v.MAX_PAYLOAD_BYTES}, True), ({"payload": b"p" * (v.MAX_PAYLOAD_BYTES + 1)}, False),
    ({"action": b"a" * v.MAX_ACTION_BYTES}, True), ({"action": b"a" * (v.MAX_ACTION_BYTES + 1)}, False),
    ({"labels": {}}, True), ({"labels": {"k": "v"}}, False),
    ({"key": "k" * v.MAX_IDEMPOTENCY_KEY_LEN}, True), ({"key": "k"}, True), ({"key": "k" * 129}, False),
    ({"key": ""}, False),
    ({"key": "é"}, False), ({"ack_required": True}, True), ({"ack_required": 1}, False),
    ({"timer_id": "a b"}, False), ({"tenant": "a b"}, False), ({"payload": bytearray()}, False),
])
def test_plain_spec_is_true_exactly_for_the_common_valid_case(change, plain):
    assert v.plain_spec(**{**PLAIN, **change}) is plain


def test_a_mapping_that_yields_a_key_twice_is_refused():
    # Only a misbehaving Mapping can do this; the pairs would otherwise reach the snapshot twice.
    from collections.abc import Mapping

    class Twice(Mapping):
        def __getitem__(self, k):
            return "a"

        def __iter__(self):
            return iter(("k", "k"))

        def __len__(self):
            return 2

        def items(self):
            return [("k", "b"), ("k", "a")]

    with pytest.raises(InvalidArgument) as err:
        v.check_labels("l", Twice())
    assert (err.value.field, err.value.rule) == ("l", "duplicate key 'k'")
