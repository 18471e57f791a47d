"""protocol.wire names every problem code the server can answer with, so a client that branches
on `ProblemCode` never meets a code the wire format does not know."""

import importlib
import pkgutil

import coordinator
import protocol
from protocol.errors import VeritrainError
from protocol.wire import AssignmentState, JobState, ProblemCode

CLIENT_SIDE = {"veritrain_error", "coordinator_error", "invalid_response"}


def _server_error_classes() -> set[type[VeritrainError]]:
    for package in (protocol, coordinator):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not info.name.startswith(("coordinator.migrations", "protocol.repro._")):
                importlib.import_module(info.name)
    found, todo = set(), [VeritrainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub)
            todo.append(sub)
    return {c for c in found if c.__module__.startswith(("protocol.", "coordinator."))}


def test_every_server_error_code_is_a_problem_code():
    codes = {c.code for c in _server_error_classes()} - CLIENT_SIDE
    assert codes, "no error classes found"
    assert codes <= {p.value for p in ProblemCode}, codes - {p.value for p in ProblemCode}


def test_state_names_are_the_strings_on_the_wire():
    assert JobState("settled") is JobState.SETTLED and f"{JobState.SETTLED}" == "settled"
    assert AssignmentState.AWAITING_START == "awaiting_start"


def _server_views() -> dict[str, type]:
    from pydantic import BaseModel

    views = {}
    for info in pkgutil.walk_packages(coordinator.__path__, "coordinator."):
        if info.name.endswith("schemas"):
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if name.endswith("View") and isinstance(obj, type) and issubclass(obj, BaseModel):
                    views[name] = obj
    return views


def test_sdk_views_carry_every_field_the_server_sends():
    """The client's typed answers mirror the server's schemas (the SDK may not import them):
    a field added on one side and not the other fails here, not in a daemon."""
    import dataclasses

    import sdk.responses

    server = _server_views()
    shared = [n for n in server if hasattr(sdk.responses, n)]
    assert len(shared) >= 8, shared
    for name in shared:
        client_fields = {f.name for f in dataclasses.fields(getattr(sdk.responses, name))}
        assert set(server[name].model_fields) == client_fields, name
