"""Prefect flows: orchestration only (wiring, retries, where outputs go) over spatialmeta."""
