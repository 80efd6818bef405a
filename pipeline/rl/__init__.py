"""The RL step: trainer loop, learner, rollout batch (docs/design.md, "One RL step")."""
