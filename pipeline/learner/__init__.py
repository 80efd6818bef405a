"""The learner: rollout batches in, policy updates out (docs/design.md, "One RL step").

batch.py (RolloutBatch, PolicyScores, build_batch), micro_batches.py (how a mini-batch is cut into
passes), learner.py (Learner: score, update, state),
data_parallel.py (whole groups per rank, gradient all-reduce). The cluster package wraps the
learner in Ray actors; the RL loop (pipeline/rl) drives it.
"""
