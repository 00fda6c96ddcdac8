"""Error classification, node health and liveness will live here (issues 4 and 5)."""
