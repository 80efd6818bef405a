"""Supervised stages' library: the shared fit loop, SFT, the reward model and DPO."""
