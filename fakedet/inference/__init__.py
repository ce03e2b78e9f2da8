"""Scoring images with a trained detector: load a checkpoint or an export, score files, describe
a checkpoint. Imports no training code, and no SciPy, scikit-learn or pandas."""
