"""Figures, report.html and the comparison of runs. Imports nothing from hmarl.train."""
