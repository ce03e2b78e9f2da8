"""Checkpoints: the typed schema (what a checkpoint file holds), atomic save and weights-only
load, compatibility with older versions' files, and the stored calibration map."""
