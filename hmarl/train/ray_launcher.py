"""Ray for sweeps on a running cluster: the checks behind ``hydra/launcher=ray_cluster``.

Why a subclass: hydra-ray-launcher always adds ``object_store_memory`` to ``ray.init`` (a
CI workaround of its own), and Ray refuses any start-up setting (``object_store_memory``,
``num_cpus``, ...) when it joins an existing cluster, so the plugin could not join one. And a
job asking for more than any node has waits in Ray's queue forever ("No available node types
can fulfill resource request"); here the sweep stops before launching with the numbers.
:func:`start_or_join` starts or joins Ray, passing start-up settings only when it starts one,
and checks that one node can fit a job; the launcher class
(``hydra_plugins/hmarl_launchers/ray_cluster.py``, where Hydra requires plugins to live)
calls it, then lets the plugin launch (it finds Ray initialised).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# ray.init() keywords that only describe a Ray instance being started.
START_ONLY = ("num_cpus", "num_gpus", "resources", "labels", "object_store_memory")


class RayResourcesError(ValueError):
    """No node of the cluster can ever run one job (exit 2: change the request or the cluster)."""


def init_args(init: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ray.init`` keywords: start-up settings dropped when joining a running cluster."""
    args = {k: v for k, v in init.items() if v is not None}
    if args.get("address") not in (None, "local"):  # "auto", "host:port", "ray://..."
        dropped = [k for k in START_ONLY if k in args]
        if dropped:
            log.info("joining a running Ray cluster: ignoring %s", ", ".join(dropped))
        args = {k: v for k, v in args.items() if k not in START_ONLY}
    return args


def job_request(remote: Mapping[str, Any]) -> dict[str, float]:
    """What one job asks of a node (Ray's task default is one CPU)."""
    cpus = remote.get("num_cpus")
    request = {"CPU": float(1 if cpus is None else cpus)}
    if remote.get("num_gpus"):
        request["GPU"] = float(remote["num_gpus"])
    if remote.get("memory"):
        request["memory"] = float(remote["memory"])
    request.update({k: float(v) for k, v in (remote.get("resources") or {}).items()})
    return {k: v for k, v in request.items() if v > 0}


def check_fits(request: Mapping[str, float], nodes: Sequence[Mapping[str, float]]) -> None:
    """Raise unless one node has every resource a job asks for."""
    if any(all(node.get(k, 0.0) >= v for k, v in request.items()) for node in nodes):
        return
    largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in request}
    raise RayResourcesError(
        f"no node of the Ray cluster can run a job: each asks for {dict(request)} and the "
        f"largest node offers {largest} ({len(nodes)} node(s) alive); lower "
        "hydra.launcher.ray.remote.num_cpus (or num_gpus / memory) or add a bigger node"
    )


def _plain(node: Any) -> dict[str, Any]:
    out = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    assert isinstance(out, dict)
    return {str(k): v for k, v in out.items()}


def start_or_join(init_cfg: Any, remote_cfg: Any) -> None:
    """``ray.init`` as configured (start-up settings only when starting), then refuse a job
    no alive node can fit (:class:`RayResourcesError`) instead of queueing it forever."""
    import ray

    if not ray.is_initialized():
        args = init_args(_plain(init_cfg))
        log.info("ray.init(%s)", args)
        ray.init(**args)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    check_fits(job_request(_plain(remote_cfg)), nodes)
