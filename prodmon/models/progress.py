"""Models of progress tracking: expected inputs, reports, notifications (issue 6)."""

__all__: list[str] = []
