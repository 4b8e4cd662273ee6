"""Walk-forward: many trainings on sliding splits, judged by their stitched out-of-sample record.

(Docstring only: each name is imported from its module.)
"""
