"""Progress, completion estimates, file-level completeness and efficiency reports."""
