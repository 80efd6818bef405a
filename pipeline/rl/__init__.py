"""The RL loop: rollouts, rewards, advantages and the learner's update, one step after another
(docs/design.md, "One RL step"). It drives pipeline/learner and pipeline/rollout, or their Ray
versions in pipeline/cluster."""
