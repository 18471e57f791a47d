"""Streaming, resumable uploads of checkpoints and datasets (docs/coordinator.md, "Blob store")."""
