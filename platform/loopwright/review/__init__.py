"""The weekly review: score every active skill version, diagnose the underperforming ones,
try at most two candidates each, gate them on recorded runs, promote, and report."""
