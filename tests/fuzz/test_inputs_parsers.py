"""Input fuzzing of every parser that takes outside bytes (tools.fuzz_inputs.TARGETS): mutated real
seeds and random bytes give a result or the parser's typed error, never a crash, a run past the
watchdog or an allocation a size field asked for; regression examples of what fuzzing found."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings

from tools import fuzz_inputs

EXAMPLES = 40  # per target: the suite stays fast; python -m tools.fuzz runs thousands
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def mock_session():
    yield
    fuzz_inputs.MockSession.close()


def fuzz_target(name: str):
    target = fuzz_inputs.TARGETS[name]

    @FUZZ
    @given(fuzz_inputs.inputs(target))
    def run(item):
        fuzz_inputs.check(target, *item)

    return run


@pytest.mark.parametrize("name", ["firmware", "discovery", "codeobject", "msgpack", "rdna3", "ih", "pm4"])
def test_mutated_inputs_get_a_result_or_a_typed_error(name):
    fuzz_target(name)()


# a COPY_LINEAR whose COUNT asks for 16 MiB: the mock SDMA read the whole source into one bytes
# object before writing it (a COUNT of 2^30 would have allocated 1 GiB); it streams now
@example(("copy", bytes.fromhex("01000000ff0f00010000000000b098008000000000c0980080000000")))
# TIMESTAMP SET to 2^64 - 1, then GET_GLOBAL: the model's counter went past 64 bits and writing it
# raised OverflowError; the counter wraps now
@example(("timestamp", bytes.fromhex("0d000000ffffffffffffffff" "0d02000008000000ff7f0000")))
@FUZZ
@given(fuzz_inputs.inputs(fuzz_inputs.TARGETS["sdma"]))
def test_sdma_packets_get_a_result_or_the_engines_packet_error(item):
    fuzz_inputs.check(fuzz_inputs.TARGETS["sdma"], *item)


def test_every_target_has_seeds_from_real_inputs():
    for target in fuzz_inputs.TARGETS.values():
        seeds = target.seeds()
        assert seeds and all(isinstance(data, bytes) and data for _, data in seeds), target.name


def test_the_debian_firmware_seeds_are_used_when_cached():
    root = fuzz_inputs.debian_firmware_root()
    if root is None:
        pytest.skip("Debian's firmware-amd-graphics is not cached: python -m drivers.am.firmware --fetch")
    labels = [label for label, _ in fuzz_inputs.firmware_seeds()]
    assert len(labels) > len(set(labels))  # each file name twice: synthetic and real


def test_an_untyped_exception_or_a_large_allocation_is_a_parser_bug():
    def crash(label, data):
        return data[len(data) + 1] if data else [][0]

    def hog(label, data):
        return bytearray(64 << 20)

    with pytest.raises(fuzz_inputs.ParserBug, match="IndexError"):
        fuzz_inputs.check(fuzz_inputs.Target("crash", list, crash, (ValueError,)), "x", b"ab")
    with pytest.raises(fuzz_inputs.ParserBug, match="allocated"):
        fuzz_inputs.check(fuzz_inputs.Target("hog", list, hog, ()), "x", b"ab")


def test_mutations_flip_truncate_and_overwrite_fields():
    data = bytes(16)
    assert fuzz_inputs.mutate(data, [("flip", 3, 1)])[3] == 2
    assert fuzz_inputs.mutate(data, [("truncate", 5, 0)]) == bytes(5)
    assert fuzz_inputs.mutate(data, [("word", 8, 11)])[8:12] == b"\xff\xff\xff\xff"
    assert fuzz_inputs.mutate(data, [("word", 0, -1)])[0:4] == (16).to_bytes(4, "little")
