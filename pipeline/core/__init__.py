"""Shared machinery: models, the forward pass and log-probs, optimiser, checkpoints, tracking."""
