"""The agent: the hierarchical policy, the factored rollout, the gradient estimators, its
evaluation over a split, and the checkpoint payload."""
