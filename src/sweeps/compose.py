"""Composing conf/ outside `@hydra.main` (promote, deploy, databricks, tests), and a job's config rebuilt in
another process (the ranks of a run, a trial on a Databricks cluster)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig


def conf_dir() -> Path:
    """The conf/ folder: $SWEEPS_CONF_DIR, else the one beside the source tree, else the packaged copy."""
    if os.environ.get("SWEEPS_CONF_DIR"):
        return Path(os.environ["SWEEPS_CONF_DIR"]).resolve()
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[1] / "conf", here / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError("sweeps: no conf/ folder found; set SWEEPS_CONF_DIR")


def compose(overrides: list[str], *, with_hydra: bool = False) -> DictConfig:
    """conf/config.yaml with Hydra-style overrides, as `python -m sweeps train` composes it (with its `hydra`
    node when `with_hydra`); overrides that do not compose are one ConfigError naming the key and the fix."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sweeps.schema import register

    register()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="train"):
            return hydra_compose("config", overrides=overrides, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(compose_message(exc, overrides)) from None


def compose_message(exc: Exception, overrides: list[str]) -> str:
    """Hydra's composition error as one line that names the key or option and the fix."""
    text = str(exc).strip()
    missing = re.search(r"Could not find '([\w/-]+)/([\w.-]+)'", text)
    if missing:
        group, option = missing.groups()
        options = re.findall(r"^\t(\S+)$", text, flags=re.M)
        choose = f"choose one of {', '.join(options)}" if options else f"see conf/{group}/"
        return f"{group}={option}: no such option in conf/{group}/; {choose}"
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        return f"{unknown.group(1)}: no such key; check its spelling (python -m sweeps train --cfg job shows the keys)"
    merging = re.match(r"Error merging override (\S+)", text)
    cause = str(exc.__cause__ or "").strip().splitlines()
    if merging and cause:
        return f"{merging.group(1)}: {cause[0]}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first}; check the overrides: {' '.join(overrides) or '(none)'}"


def load_job_config(text: str) -> DictConfig:
    """A Hydra job's whole config from YAML (`OmegaConf.to_yaml(HydraConfig.instance().cfg)`), its `hydra` node
    typed as `HydraConfig.set_config` expects: how a job's Hydra state reaches another process."""
    from hydra.conf import HydraConf
    from omegaconf import DictConfig, OmegaConf, open_dict

    from sweeps.schema import register

    register()  # the resolvers its interpolations use
    config = OmegaConf.create(text)
    assert isinstance(config, DictConfig)
    if "hydra" in config:
        hydra = OmegaConf.structured(HydraConf)
        OmegaConf.set_struct(hydra, False)  # keys the driver's Hydra added beyond the schema stay
        hydra.merge_with(config.hydra)
        with open_dict(config):
            config.hydra = hydra
    OmegaConf.set_struct(config, True)
    return config
