"""hmarl: hierarchical multi-timescale REINFORCE trainer for trading policies.

A slow MacroNet (long window) and a fast MicroNet (short window) feed a DecisionHead
that chooses HOLD / BUY / SELL; MacroNet updates on a slower, configurable schedule.
"""

__version__ = "0.1.0"
