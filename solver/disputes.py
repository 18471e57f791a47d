"""The solver's side of disputes: replay the disputed segment once (with its own behaviour, so
its answers match what it trained) and answer every move from that trace."""

from sdk.dispute_play import process_solver_disputes


def process_open_disputes(daemon) -> None:
    process_solver_disputes(
        daemon.client, daemon.store / "jobs", daemon.store / "disputes", daemon.config.behaviour
    )
