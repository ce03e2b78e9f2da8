"""Measuring detectors on labelled images: the validation pass, validate and calibrate on a
split, per-group and per-perturbation test-set evaluation, metrics, calibration fitting."""
