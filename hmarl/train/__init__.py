"""Training: ``python -m hmarl.train`` (__main__), the trainer, the selection rule, sweeps."""
