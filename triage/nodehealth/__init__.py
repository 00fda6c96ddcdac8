"""Node health: black-hole detection (pure core in `detector`) and exports.

The detector never touches the ORM, so bench/blackholes.py replays a whole
simulated campaign through the very same code that triage.services runs after
each attempt end.
"""
