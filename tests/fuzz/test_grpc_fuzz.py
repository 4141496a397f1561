"""Every gRPC method of the gateway, fuzzed over real loopback gRPC with raw request bytes.

For each method (from the generated descriptors: a new method is fuzzed without a change here)
hypothesis sends random bytes, well-formed messages with hostile field values and messages
damaged at the wire level (:mod:`tests.fuzz.protowire`), through a generic channel so that
nothing is refused on the client's side. The property for every example
(:func:`~tests.fuzz.grpc_targets.judge`): a typed status (INVALID_ARGUMENT naming the field),
never INTERNAL, UNKNOWN or UNAVAILABLE, and an answer within the deadline; a stream may still
be open after its read window. The CI profile runs 10,000 examples per method (the full one
30,000); the module's ``unharmed`` fixture then checks the runtime (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.fuzz.conftest import Fuzzing
from tests.fuzz.grpc_targets import (
    GUARDS,
    GrpcTarget,
    discover,
    services,
)
from tests.fuzz.protowire import length_delimited, request_bytes
from tests.fuzz.runner import LONG_PROFILES, profile_name
from tests.support.grpcurl import Reflection

pytestmark = pytest.mark.integration

TARGETS = discover()
TEST_TIMEOUT_S = 1800 if profile_name() in LONG_PROFILES else 600
SERVED_ELSEWHERE = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


def test_every_method_is_fuzzed(fuzzing: Fuzzing) -> None:
    """Every method each live server lists (gRPC reflection) is a target, every target has a
    strategy and a safety decision (GUARDS): a new RPC fails here until it is classified."""
    ids = {t.id for t in TARGETS}
    assert ids == set(GUARDS), (sorted(ids - set(GUARDS)), sorted(set(GUARDS) - ids))
    for server, svcs in services().items():
        reflection = Reflection(fuzzing.caller.channels[server])
        live = set(reflection.services())
        expected = {s.full_name for s in svcs} | set(SERVED_ELSEWHERE)
        assert live == expected, (server, live)
        for name in live:
            methods = {f"{name}/{m.name}" for m in reflection.service(name).methods}
            assert methods <= ids, (name, sorted(methods - ids))
    for t in TARGETS:
        assert t.kind in ("unary_unary", "unary_stream", "stream_stream"), t
        assert request_bytes(t.request) is not None


@pytest.mark.timeout(TEST_TIMEOUT_S)
@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_fuzz_grpc(fuzzing: Fuzzing, unharmed: None, target: GrpcTarget) -> None:
    tally = fuzzing.run("grpc", target.id, streaming=target.kind != "unary_unary")
    print(tally.summary())
    assert tally.examples >= settings.get_profile(profile_name()).max_examples, tally.summary()


@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_grpc_message_over_max_request_bytes(
    fuzzing: Fuzzing, unharmed: None, target: GrpcTarget
) -> None:
    """One byte over ``gateway.max_request_bytes`` (in an unknown field, so that a message of
    any type would parse): RESOURCE_EXHAUSTED before the handler runs, naming the limit."""
    limit = fuzzing.clients.max_request
    pad = limit + 1 - len(length_delimited(1000, b""))
    raw = length_delimited(1000, b"x" * pad)
    assert len(raw) > limit
    outcome = fuzzing.caller.call(target, raw, window_s=30.0)
    assert outcome.code == "RESOURCE_EXHAUSTED", outcome
    assert f"vs. {limit})" in outcome.details, outcome.details
