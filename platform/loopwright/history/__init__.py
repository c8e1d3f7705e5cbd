"""Run history that lasts: per-version rollups and error signatures, retention, recorded tool
calls and replay, and the seeder that writes weeks of history through the runner's scripts."""
