"""The page: ``python -m hmarl.app`` (__main__) launches page.py, which shows backend's tables."""
