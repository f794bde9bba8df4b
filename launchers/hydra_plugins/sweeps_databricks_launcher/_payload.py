"""What a run needs besides the wheel: the task function and resolvers (once per session), the job's config."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
from omegaconf import DictConfig, OmegaConf

# Top-level packages of the project's wheel.
SHIPPED = ("sweeps", "hydra_plugins")
# Keys resolved on the driver: they may use ${now:...}, whose value the driver has fixed for the sweep.
DRIVER_RESOLVED = ("hydra.sweep.dir", "hydra.sweep.subdir", "hydra.run.dir")


def dump_setup(task_function: Callable[..., Any]) -> bytes:
    """The task function (by reference when importable, so the cluster's Python may differ; else by value)
    and the OmegaConf resolvers the driver has registered."""
    from omegaconf.basecontainer import BaseContainer

    return cloudpickle.dumps(
        {
            "task": _task_ref(task_function),
            "resolvers": dict(BaseContainer._resolvers),
            "python": list(sys.version_info[:2]),
        }
    )


def load_setup(data: bytes) -> Callable[..., Any]:
    """Register the driver's resolvers that are missing here and return the task function."""
    from omegaconf.basecontainer import BaseContainer

    setup = cloudpickle.loads(data)
    for name, resolver in setup["resolvers"].items():
        if not OmegaConf.has_resolver(name):
            BaseContainer._resolvers[name] = resolver
    task = setup["task"]
    if "pickled" in task:
        function: Callable[..., Any] = cloudpickle.loads(task["pickled"])
        return function
    target: Any = importlib.import_module(task["module"])
    for part in task["qualname"].split("."):
        target = getattr(target, part)
    return inspect.unwrap(target)


def _task_ref(function: Callable[..., Any]) -> dict[str, Any]:
    """By reference when the function's module ships in the wheel or is an installed package (the cluster
    imports it); by value otherwise (a script, a module of a source tree the wheel does not hold)."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    loaded = sys.modules.get(module or "")
    if loaded is not None and module != "__main__" and "<locals>" not in qualname and _shipped(loaded):
        try:
            target: Any = loaded
            for part in qualname.split("."):
                target = getattr(target, part)
            if target is function or inspect.unwrap(target) is function:
                return {"module": module, "qualname": qualname}
        except AttributeError:
            pass
    if loaded is not None and module != "__main__" and not _shipped(loaded):
        cloudpickle.register_pickle_by_value(loaded)
        try:
            return {"pickled": cloudpickle.dumps(function)}
        finally:
            cloudpickle.unregister_pickle_by_value(loaded)
    return {"pickled": cloudpickle.dumps(function)}


def _shipped(module: ModuleType) -> bool:
    """Whether a cluster with the project's wheel installed can import the module."""
    if module.__name__.split(".")[0] in SHIPPED:
        return True
    path = getattr(module, "__file__", None)
    return path is None or any(part in ("site-packages", "dist-packages") for part in Path(path).parts)


def dump_config(config: DictConfig) -> str:
    """The job's composed config as YAML, interpolations kept except those fixed by the driver."""
    plain = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    for key in DRIVER_RESOLVED:
        value = OmegaConf.select(config, key, default=None)
        if value is not None:
            OmegaConf.update(plain, key, str(value), merge=False)
    return OmegaConf.to_yaml(plain)
