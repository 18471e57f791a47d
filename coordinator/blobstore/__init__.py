"""Content-addressed blob storage for checkpoints, datasets and dispute states (docs/coordinator.md,
"Blob store"). SQL keeps each blob's hash, size and uploader; the bytes live here."""
