"""Accounts keep no rows of their own: balances are ledger rows (coordinator.ledger.repository)."""
