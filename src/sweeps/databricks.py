"""Databricks compute (`compute=databricks`): its schema and `python -m sweeps databricks check|cleanup`.

python -m sweeps train -m sweep=imdb_tpe compute=databricks compute.upload_dir=/Volumes/main/ml/sweeps
python -m sweeps databricks check [overrides]          # credentials, runtime, node type, volume; nothing runs
python -m sweeps databricks cleanup [--sweep NAME]     # cancel a sweep's active runs, terminate their clusters

The launcher (hydra/launcher=sweeps_databricks, selected by compute=databricks) reads these options.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from sweeps.compute import ComputeConfig


@dataclass
class DatabricksComputeConfig(ComputeConfig):
    # Profile of ~/.databrickscfg; null: the databricks-sdk credential chain (DATABRICKS_HOST with
    # DATABRICKS_TOKEN, DATABRICKS_CONFIG_PROFILE, Azure service principal ARM_CLIENT_ID/ARM_CLIENT_SECRET/
    # ARM_TENANT_ID, Azure CLI). Credentials never go in a config file.
    profile: str | None = None
    # An existing cluster to run every trial on (then new_cluster: null).
    existing_cluster_id: str | None = None
    # A new job cluster per trial, in the Clusters API's terms: spark_version (an ML GPU runtime),
    # node_type_id, num_workers or autoscale, azure_attributes (availability: SPOT_WITH_FALLBACK_AZURE, ...),
    # spark_conf, custom_tags, ...
    new_cluster: dict[str, Any] | None = None
    # More libraries for each run, in the Jobs API's terms ({pypi: {package: peft}}).
    libraries: list[Any] = field(default_factory=list)
    # Train on every node with TorchDistributor (needs new_cluster.num_workers > 0).
    distributed: bool = False
    # Unity Catalog volume folder for the wheel and the trials' files: /Volumes/<catalog>/<schema>/<volume>/<folder>
    upload_dir: str | None = None
    # Seconds a run may take, cluster start included; 0: no limit.
    timeout: int = 7200
    # Seconds between the driver's looks at each run (state, progress for pruning).
    poll_interval: float = 10.0
    # Seconds between a trial's uploads of its progress lines.
    progress_interval: float = 5.0
    # A wheel of this project to ship; null: built from the source tree once per sweep.
    wheel: str | None = None


def register() -> None:
    """The schema of conf/compute/databricks.yaml (its defaults list names `compute_databricks_schema`; stored
    outside the compute group, so it is no option of its own)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="compute_databricks_schema", node=DatabricksComputeConfig)


def main(argv: list[str]) -> int:
    """`python -m sweeps databricks check|cleanup|run-trial ...`"""
    if argv and argv[0] == "run-trial":  # the trial on the cluster, started by the run's wheel task
        from hydra_plugins.sweeps_databricks_launcher import _remote

        return _remote.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sweeps databricks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check credentials, runtime, node type and volume; runs nothing")
    check.add_argument("overrides", nargs="*", help="config overrides, e.g. compute.new_cluster.node_type_id=...")
    cleanup = commands.add_parser("cleanup", help="cancel active runs of sweeps and terminate their clusters")
    cleanup.add_argument("--sweep", metavar="NAME", help="only this sweep's runs (its study name)")
    cleanup.add_argument("overrides", nargs="*", help="config overrides, e.g. compute.profile=...")
    args = parser.parse_args(argv)
    from sweeps.errors import EXIT_BAD_INPUT, ConfigError, report

    try:
        cfg = _compose(args.overrides)
        from hydra_plugins.sweeps_databricks_launcher import _checks

        key = _checks.KeyNames(cfg)
        profile = cfg.hydra.launcher.profile
        if args.command == "check":
            opts = _checks.Options.parse(cfg.hydra.launcher, key)
            client, facts = _checks.connect(opts, key)
            _print_check(client, opts, facts)
            return 0
        client = _checks.client_for(profile, key, _checks.CHECK_RETRY_S, _checks.CHECK_HTTP_TIMEOUT_S)
        try:
            me = client.current_user.me().user_name
        except Exception as e:
            raise ConfigError(_checks.connection_problem(e, client.config.host, key)) from None
    except ConfigError as error:
        report(error)
        return EXIT_BAD_INPUT
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    return cleanup_runs(WorkspaceClient(config=Config(profile=profile)), me, args.sweep)


def _compose(overrides: list[str]) -> Any:
    """The app's config with compute=databricks and the overrides, Hydra's node included."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig

    from sweeps.config import conf_dir
    from sweeps.config import register as register_app
    from sweeps.errors import ConfigError

    register_app()
    register()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="train"):
            cfg = compose("config", overrides=["compute=databricks", *overrides], return_hydra_config=True)
    except Exception as e:
        given = " ".join(overrides) or "compute=databricks"
        raise ConfigError(f"{given}: the config cannot be composed ({e})") from None
    assert isinstance(cfg, DictConfig)
    return cfg


def _print_check(client: Any, opts: Any, facts: dict[str, Any]) -> None:
    print(f"workspace    {facts['host']} as {facts['user']}")
    if opts.existing_cluster_id:
        print(f"cluster      {opts.existing_cluster_id} (existing)")
    else:
        spec = opts.new_cluster or {}
        workers = spec.get("autoscale") or spec.get("num_workers")
        print(f"runtime      {spec.get('spark_version')}")
        print(f"node type    {spec.get('node_type_id')} ({facts.get('gpus', 0)} GPU), workers {workers}")
    print(f"upload dir   {opts.upload_dir}")
    print("ok: a sweep with these settings can be submitted")


def cleanup_runs(client: Any, user: str | None, sweep: str | None, wait_s: float = 120.0) -> int:
    """Cancel the active one-time runs of sweeps (or of one sweep) started by this identity, then
    terminate the job clusters they started that are still up."""
    from databricks.sdk.errors import DatabricksError
    from databricks.sdk.service.jobs import RunType

    prefix = f"sweeps/{sweep}/" if sweep else "sweeps/"
    runs = [
        r
        for r in client.jobs.list_runs(active_only=True, run_type=RunType.SUBMIT_RUN, expand_tasks=True)
        if (r.run_name or "").startswith(prefix) and (user is None or r.creator_user_name in (None, user))
    ]
    if not runs:
        print(f"no active runs named {prefix}*")
        return 0
    for run in runs:
        try:
            client.jobs.cancel_run(run.run_id)
            print(f"cancelling run {run.run_id} {run.run_name} {run.run_page_url or ''}".rstrip())
        except DatabricksError as e:
            print(f"run {run.run_id}: {e}", file=sys.stderr)
    deadline = time.monotonic() + wait_s
    clusters: set[str] = set()
    for run in runs:
        while True:
            current = client.jobs.get_run(run.run_id)
            life = current.state.life_cycle_state.value if current.state and current.state.life_cycle_state else ""
            if life in ("TERMINATED", "INTERNAL_ERROR", "SKIPPED") or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        for task in current.tasks or []:
            if task.new_cluster is not None and task.cluster_instance and task.cluster_instance.cluster_id:
                clusters.add(task.cluster_instance.cluster_id)
    for cluster_id in sorted(clusters):
        try:
            state = client.clusters.get(cluster_id).state
            if state is not None and state.value not in ("TERMINATED", "TERMINATING"):
                client.clusters.delete(cluster_id)
                print(f"terminating cluster {cluster_id}")
        except DatabricksError as e:
            print(f"cluster {cluster_id}: {e}", file=sys.stderr)
    print(f"{len(runs)} run(s) cancelled")
    return 0
