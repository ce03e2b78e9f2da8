"""Datasets: finding labelled images, decoding them robustly, and loading batches."""
