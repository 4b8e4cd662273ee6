"""``hydra/launcher=ray_cluster`` and ``ray_local``: hydra-ray-launcher that can join a running
cluster and refuses a job no node can fit (the why: ``hmarl/train/ray_launcher.py``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from hydra.core.utils import JobReturn

if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None:  # the ray extra
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

    class ClusterRayLauncher(RayLauncher):
        """``RayLauncher`` that starts or joins Ray itself, then launches as the plugin does."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from hmarl.train.ray_launcher import start_or_join

            start_or_join(self.ray_cfg.init, self.ray_cfg.remote)
            return list(super().launch(job_overrides, initial_job_idx))
