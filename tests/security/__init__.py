"""Hostile and careless inputs (issue 11): what a file may make repsim do, what it may delete."""
