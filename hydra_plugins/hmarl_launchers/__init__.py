"""hmarl's Hydra launchers (Hydra loads launcher classes only from the ``hydra_plugins`` package).

Each module offers its classes only when its launcher extra is installed, so that Hydra's
plugin scan, which imports every module here on every start, never warns without the extras.
The logic lives in ``hmarl.train`` (imported when a launcher runs).
"""
