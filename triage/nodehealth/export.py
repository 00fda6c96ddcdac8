"""The exclusion list in the shapes submit wrappers want. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Iterable


def _clean(hostnames: Iterable[str]) -> list[str]:
    return sorted({h.strip() for h in hostnames if h and h.strip()})


def htcondor_requirements(hostnames: Iterable[str]) -> str:
    """An HTCondor requirements clause; `True` when nothing is excluded, so it
    can always be and-ed into a job's requirements."""
    hosts = _clean(hostnames)
    if not hosts:
        return "True"
    return " && ".join(f'(Machine =!= "{h}")' for h in hosts)


def slurm_exclude(hostnames: Iterable[str]) -> str:
    """The value of sbatch --exclude: comma-separated node names (empty: none)."""
    return ",".join(_clean(hostnames))


def exclusion_json(nodes: list[dict], *, experiment: str | None, generated_at: str) -> str:
    hosts = [n["hostname"] for n in nodes]
    return json.dumps(
        {
            "experiment": experiment,
            "generated_at": generated_at,
            "hostnames": _clean(hosts),
            "htcondor_requirements": htcondor_requirements(hosts),
            "slurm_exclude": slurm_exclude(hosts),
            "nodes": nodes,
        },
        indent=2,
        sort_keys=True,
    )
