"""The show layer: the only code that writes to stdout/stderr (Rich for people, JSON for scripts). display.py holds
the Display every command writes through and the shared formatting; one module per result kind renders it."""
