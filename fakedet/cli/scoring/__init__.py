"""The commands that score images with a trained model: predict, validate, calibrate, evaluate
and inspect-checkpoint."""
