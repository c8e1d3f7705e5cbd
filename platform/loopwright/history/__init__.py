"""Run history kept bounded and useful: retention, rollups, recordings and replay."""
