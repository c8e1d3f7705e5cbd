"""The weekly review: select underperforming skills, diagnose them, propose at most two
candidates, gate each on held-out recorded runs, promote under a watch, and report."""
