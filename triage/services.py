"""Error classification services (issue 4 fills this in)."""


def attempt_classify(*, attempt_id: int) -> None:
    """Classify an ended attempt. Until the triage work lands this records nothing."""
    return None
