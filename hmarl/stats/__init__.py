"""Statistics of a steps table: one compute_stats(), the baselines and the random-timing null.

Imports no torch (tests/test_layout.py): a report must be computable without the networks."""
