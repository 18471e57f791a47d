"""Structured logs (issue 16): the formatter, and `--log-format json` from a real coordinator and
a real solver daemon (subprocesses) through a job's life — every line parses as JSON and carries
ts, level, event, message and the ids the event concerns; no secret ever appears."""

import json
import logging
import re
import signal
import sys

import pytest

from protocol.presets import example_job_spec_json
from protocol.spec import compute_job_id, parse_job_spec
from protocol.wire import JobState
from sdk.logs import JsonFormatter, TextFormatter, get_event
from tests.daemons.test_daemons import MARKET_ENV, STAKE, Market, spawn, wait_until

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
JOB_ID = "ab" * 32


def make_record(msg: str, *args, **extra) -> logging.LogRecord:
    record = logging.LogRecord("veritrain.solver", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_json_formatter_writes_one_object_with_ids_as_fields():
    record = make_record(
        "bid %d on job %s",
        500,
        JOB_ID[:12],
        event="job.bid",
        job_id=JOB_ID,
        account="cd" * 32,
        price=500,
        signature="ff" * 64,  # never logged, whatever a call site passes
        salt="ee" * 16,
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    obj = json.loads(line)
    assert RFC3339_UTC.match(obj["ts"]), obj["ts"]
    assert obj["level"] == "info" and obj["event"] == "job.bid"
    assert obj["message"] == f"bid 500 on job {JOB_ID[:12]}"
    assert (obj["job_id"], obj["account"], obj["price"]) == (JOB_ID, "cd" * 32, 500)
    assert "signature" not in obj and "salt" not in obj and "ff" * 64 not in line


def test_json_formatter_keeps_a_traceback_on_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = make_record("sweep failed", event="sweep.failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["error"]


def test_text_formatter_is_readable_and_shows_the_same_ids():
    record = make_record(
        "assignment %d moved on", 7, event="assignment.moved_on", assignment_id=7, job_id=JOB_ID
    )
    line = TextFormatter().format(record)
    stamp, level, logger, event, *_ = line.split()
    assert RFC3339_UTC.match(stamp) and level == "INFO" and logger == "veritrain.solver"
    assert event == "assignment.moved_on:" and "assignment 7 moved on" in line
    assert f"[job_id={JOB_ID} assignment_id=7]" in line


def test_records_without_an_event_get_one_from_their_logger():
    assert get_event(logging.LogRecord("uvicorn.error", 20, "", 0, "x", (), None)) == "server.log"
    assert get_event(logging.LogRecord("alembic.runtime.x", 20, "", 0, "", (), None)) == (
        "db.migration"
    )
    assert get_event(logging.LogRecord("somewhere", 20, "", 0, "x", (), None)) == "log"


def parse_lines(text: str, source: str) -> list[dict]:
    """Every non-empty line as JSON with the fields every event has."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise AssertionError(f"{source} line {number} is not JSON: {raw!r}") from err
        assert isinstance(obj, dict), raw
        for key in ("ts", "level", "event", "message"):
            assert key in obj, f"{source} line {number} has no {key}: {raw}"
        assert RFC3339_UTC.match(obj["ts"]), raw
        assert obj["level"] in ("debug", "info", "warning", "error", "critical"), raw
        assert re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", obj["event"]), raw
        lines.append(obj)
    return lines


def check_ids(lines: list[dict]) -> None:
    """Events about a job, assignment or dispute name it."""
    for obj in lines:
        event = obj["event"]
        if event.startswith(("job.", "checkpoint.")) and event != "job.submitted":
            assert re.fullmatch(r"[0-9a-f]{64}", obj.get("job_id", "")), obj
        if event.startswith("assignment.") and event != "assignment.challenged":
            assert isinstance(obj.get("assignment_id"), int), obj
        if event.startswith("dispute."):
            assert isinstance(obj.get("dispute_id"), int), obj
        if event == "sweep.resolved":
            assert {"job_id", "assignment_id", "dispute_id"} & obj.keys(), obj
        if event == "http.request":
            assert {"method", "path", "status", "duration_ms"} <= obj.keys(), obj


@pytest.mark.slow
def test_log_format_json_from_coordinator_and_solver(tmp_path):
    market = Market(tmp_path)
    try:
        coordinator = spawn(
            [
                "coordinator",
                "serve",
                "--dev",
                "--port",
                str(market.port),
                "--database-url",
                f"sqlite:///{tmp_path / 'c.db'}",
                "--key-file",
                str(tmp_path / "c.key"),
                "--access-log",
                "--log-format",
                "json",
            ],
            tmp_path / "coordinator.log",
            MARKET_ENV,
        )
        market.processes.append(coordinator)
        wait_until(lambda: _is_up(market.url), 60, "the coordinator")
        submitter, solver = market.party("submitter"), market.party("solver")
        spec = example_job_spec_json("mlp", steps=20)
        spec["checkpoint_interval"] = 20
        job_id = compute_job_id(parse_job_spec(spec)).hex()
        daemon = market.daemon(
            "solver", "solver", "--price", "600", "--stake", str(STAKE), "--only-job", job_id,
            "--log-format", "json",
        )  # fmt: skip
        submitter.submit_job(
            spec, 1000, min_stake=STAKE, num_verifiers=0, num_segments=1, bidding_s=2
        )
        wait_until(lambda: submitter.get_job(job_id).state is JobState.SETTLED, 120, "settlement")
        state_file = tmp_path / "solver" / "state.json"
        wait_until(
            lambda: json.loads(state_file.read_text())["jobs"][job_id]["state"] == "settled",
            30,
            "the solver to see its job settled",
        )
        for process in (daemon, coordinator):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    finally:
        market.close()

    secrets = [(tmp_path / f"{n}.key").read_text().strip() for n in ("submitter", "solver")]
    server_text = (tmp_path / "coordinator.log").read_text()
    solver_text = (tmp_path / "solver.log").read_text()
    for text in (server_text, solver_text):
        assert not any(secret in text for secret in secrets), "a private key was logged"
        assert "x-veritrain-signature" not in text.lower()

    server = parse_lines(server_text, "coordinator")
    check_ids(server)
    events = {(o["event"], o.get("job_id"), o.get("account")) for o in server}
    assert ("job.submitted", job_id, submitter.public_key) in events
    assert ("job.bid", job_id, solver.public_key) in events
    assert ("job.committed", job_id, solver.public_key) in events
    assert any(o["event"] == "sweep.resolved" and o.get("job_id") == job_id for o in server)
    assert any(o["event"] == "http.request" and o["status"] == 200 for o in server)
    assert any(o["event"] == "server.log" and o["logger"] == "uvicorn.error" for o in server)

    lines = parse_lines(solver_text, "solver")
    check_ids(lines)
    assert all(o["account"] == solver.public_key for o in lines), "daemon lines name its key"
    solver_events = [(o["event"], o.get("job_id"), o.get("state")) for o in lines]
    assert ("job.bid", job_id, None) in solver_events
    assert ("job.state", job_id, "committed") in solver_events
    assert ("job.state", job_id, "settled") in solver_events


def _is_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/v1/info", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
