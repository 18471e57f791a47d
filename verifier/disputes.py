"""The verifier's side of disputes: answer every move from its own replay of the segment."""

from sdk.dispute_play import process_verifier_disputes


def process_open_disputes(daemon) -> None:
    process_verifier_disputes(daemon.client, daemon.store / "disputes", daemon.config.behaviour)
