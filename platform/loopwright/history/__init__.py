"""Run history: recorded tool calls, replay, rollups, error signatures and retention."""
