"""Training: the loop, its parts (built from a config), the schedule, resume, the output folder
and the side jobs around the loop. Nothing here is imported to score an image."""
