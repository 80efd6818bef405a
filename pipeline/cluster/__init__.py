"""Running the RL stage on a Ray cluster: rollout workers and data-parallel learner ranks (docs/design.md, "Scaling out")."""
