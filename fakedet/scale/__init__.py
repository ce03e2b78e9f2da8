"""Scoring across many machines on an existing distributed engine (Ray Data)."""
