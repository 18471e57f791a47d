"""The coordinator's read-only web dashboard (issue 16): server-rendered pages over the database."""
