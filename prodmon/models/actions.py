"""Models of the action layer: retries, launches, bulk actions (issue 7)."""

__all__: list[str] = []
