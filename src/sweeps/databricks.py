"""`python -m sweeps databricks check|cleanup` for compute=databricks.

python -m sweeps train -m sweep=imdb_tpe compute=databricks hydra.launcher.upload_dir=/Volumes/main/ml/sweeps
python -m sweeps databricks check [overrides]          # credentials, runtime, node type, volume; nothing runs
python -m sweeps databricks cleanup [--sweep NAME]     # cancel a sweep's active runs, terminate their clusters

The options are the launcher's (hydra/launcher=sweeps_databricks, selected by compute=databricks): hydra.launcher.*.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    """`python -m sweeps databricks check|cleanup|run-trial ...`"""
    if argv and argv[0] == "run-trial":  # the trial on the cluster, started by the run's wheel task
        from hydra_plugins.sweeps_databricks_launcher import _remote

        return _remote.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m sweeps databricks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check credentials, runtime, node type and volume; runs nothing")
    check.add_argument("overrides", nargs="*", help="overrides, e.g. hydra.launcher.new_cluster.node_type_id=...")
    cleanup = commands.add_parser("cleanup", help="cancel active runs of sweeps and terminate their clusters")
    cleanup.add_argument("--sweep", metavar="NAME", help="only this sweep's runs (its study name)")
    cleanup.add_argument("overrides", nargs="*", help="config overrides, e.g. hydra.launcher.profile=...")
    args = parser.parse_args(argv)
    from sweeps.compose import compose
    from sweeps.errors import EXIT_BAD_INPUT, ConfigError, report

    try:
        cfg = compose(["compute=databricks", *args.overrides], with_hydra=True)
        from hydra_plugins.sweeps_databricks_launcher import _checks

        profile = cfg.hydra.launcher.profile
        if args.command == "check":
            opts = _checks.Options.parse(cfg.hydra.launcher)
            client, facts = _checks.connect(opts)
            _print_check(client, opts, facts)
            return 0
        client = _checks.client_for(profile, _checks.CHECK_RETRY_S, _checks.CHECK_HTTP_TIMEOUT_S)
        try:
            me = client.current_user.me().user_name
        except Exception as e:
            raise ConfigError(_checks.connection_problem(e, client.config.host)) from None
    except ConfigError as error:
        report(error)
        return EXIT_BAD_INPUT
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    return cleanup_runs(WorkspaceClient(config=Config(profile=profile)), me, args.sweep)


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
