"""POST /v1/completions: the legacy text-completion API over the shared sampling core."""
