"""Actions: retries, recovery, stage launches, with duplicate-submission protection."""
