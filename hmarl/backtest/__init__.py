"""Backtests: ``python -m hmarl.backtest`` (__main__), the run, its inputs, runs and report."""
