"""The training engine: losses, LR schedule, metrics, checkpoints, logging and the Trainer."""
