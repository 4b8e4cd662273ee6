"""Which packages the wheel ships; everything else about the build is in pyproject.toml.

Why this file: every package under ``hmarl/`` is found (``find_packages``), so a new
subpackage cannot be left out of the wheel by a hand-kept list, and ``conf/``, which sits at
the top level of a checkout, ships as ``hmarl/conf`` (``hmarl.config.conf_dir`` looks in both
places). pyproject.toml's ``packages.find`` cannot map a folder outside ``hmarl/`` into it.
"""

from setuptools import find_namespace_packages, find_packages, setup

setup(
    # hydra_plugins/hmarl_launchers: the launchers, where Hydra requires plugins to live.
    packages=[
        *find_packages(include=["hmarl", "hmarl.*"]),
        *find_namespace_packages(include=["hydra_plugins.hmarl_launchers"]),
        "hmarl.conf",
    ],
    package_dir={"hmarl.conf": "conf"},
)
