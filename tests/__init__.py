"""The test suite is a package, so its `tests.coordinator` never shadows the `coordinator` package."""
