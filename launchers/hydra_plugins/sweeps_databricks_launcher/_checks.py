"""Checks before anything is submitted: the launcher's options, the app's tracking store, and the workspace
(credentials, runtime, node types, cluster, volume). Every problem is a ConfigError naming the key to fix."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import _wheel
from ._volume import volume_root

log = logging.getLogger(__name__)

# Retry window and HTTP timeout of the checks: a host that does not answer is reported within seconds
# (the SDK's own retry window is about 300 s).
CHECK_RETRY_S = 3
CHECK_HTTP_TIMEOUT_S = 10


def key(name: str) -> str:
    """An option as users set it."""
    return f"hydra.launcher.{name}"


@dataclass
class Options:
    """The launcher's options, checked without the network."""

    slots: int
    profile: str | None
    existing_cluster_id: str | None
    new_cluster: dict[str, Any] | None
    libraries: list[dict[str, Any]]
    distributed: bool
    upload_dir: str
    timeout: int
    poll_interval: float
    progress_interval: float
    wheel: str | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Options:
        from sweeps.errors import ConfigError

        o = {k: _plain(v) for k, v in raw.items()}
        errors: list[str] = []
        n_jobs = o.get("n_jobs")
        if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs < 1):
            errors.append(f"{key('n_jobs')}={n_jobs}: runs at once, 1 or more (or null: 1)")
        upload_dir = o.get("upload_dir")
        if not upload_dir:
            errors.append(
                f"{key('upload_dir')} is not set: give a Unity Catalog volume folder for the wheel and the "
                "trials' files, /Volumes/<catalog>/<schema>/<volume>/<folder>"
            )
        elif volume_root(str(upload_dir)) is None:
            errors.append(
                f"{key('upload_dir')}={upload_dir}: not a Unity Catalog volume path; give "
                "/Volumes/<catalog>/<schema>/<volume>[/<folder>]"
            )
        existing, new = o.get("existing_cluster_id"), o.get("new_cluster")
        if existing and new:
            errors.append(
                f"{key('existing_cluster_id')}={existing} and {key('new_cluster')} are both set: a trial runs on "
                f"one cluster; set {key('new_cluster')}=null to use the existing one, or "
                f"{key('existing_cluster_id')}=null for a new job cluster per trial"
            )
        elif not existing and not new:
            errors.append(
                f"{key('new_cluster')} and {key('existing_cluster_id')} are both empty: describe a job cluster "
                f"({key('new_cluster')}.spark_version, .node_type_id, .num_workers) or name an existing cluster"
            )
        if new:
            errors += _cluster_problems(new, key("new_cluster"))
        libraries = o.get("libraries") or []
        errors += _library_problems(libraries, key("libraries"))
        timeout = o["timeout"]
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            errors.append(f"{key('timeout')}={timeout}: seconds a run may take, a whole number >= 0 (0: no limit)")
        for name in ("poll_interval", "progress_interval"):
            value = o[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                errors.append(f"{key(name)}={value}: a number of seconds above 0")
        distributed = bool(o["distributed"])
        if distributed and isinstance(new, dict) and not _workers(new):
            errors.append(
                f"{key('distributed')}=true needs worker nodes: set {key('new_cluster')}.num_workers (or "
                "autoscale.min_workers) above 0, or distributed=false"
            )
        wheel = o.get("wheel")
        if wheel and (not str(wheel).endswith(".whl") or not Path(str(wheel)).is_file()):
            errors.append(f"{key('wheel')}={wheel}: no such wheel file; build one with `pip wheel . --no-deps`")
        elif not wheel and _wheel.project_root() is None:
            errors.append(
                f"{key('wheel')} is not set and this launcher is not in a source tree to build one from; "
                "give the path of a wheel of the project"
            )
        if errors:
            raise ConfigError(*errors)
        return cls(
            slots=n_jobs or 1,
            profile=o.get("profile"),
            existing_cluster_id=existing or None,
            new_cluster=new or None,
            libraries=list(libraries),
            distributed=distributed,
            upload_dir=str(upload_dir).rstrip("/"),
            timeout=int(timeout),
            poll_interval=float(o["poll_interval"]),
            progress_interval=float(o["progress_interval"]),
            wheel=str(wheel) if wheel else None,
        )


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _workers(cluster: Mapping[str, Any]) -> int:
    autoscale = cluster.get("autoscale") or {}
    return int(cluster.get("num_workers") or autoscale.get("min_workers") or 0)


def _unknown_keys(data: Mapping[str, Any], cls: type) -> list[str]:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return sorted(k for k in data if k not in names)


def _cluster_problems(cluster: Any, key: str) -> list[str]:
    """What runs/submit would reject in a new_cluster spec, named by key."""
    from databricks.sdk.service.compute import AutoScale, AzureAttributes, ClusterSpec

    if not isinstance(cluster, dict):
        return [f"{key}={cluster}: a mapping of cluster settings (spark_version, node_type_id, num_workers, ...)"]
    unknown = _unknown_keys(cluster, ClusterSpec)
    errors = [f"{key}.{k}: not a cluster setting of the Clusters API; check its spelling" for k in unknown]
    for name, cls in (("autoscale", AutoScale), ("azure_attributes", AzureAttributes)):
        if isinstance(cluster.get(name), dict):
            errors += [f"{key}.{name}.{k}: not a setting of {name}" for k in _unknown_keys(cluster[name], cls)]
    if not cluster.get("spark_version"):
        errors.append(f"{key}.spark_version is missing: a Databricks runtime, e.g. 15.4.x-gpu-ml-scala2.12")
    if not cluster.get("node_type_id") and not cluster.get("instance_pool_id"):
        errors.append(f"{key}.node_type_id is missing: a VM type, e.g. Standard_NC4as_T4_v3")
    if cluster.get("num_workers") is not None and cluster.get("autoscale"):
        errors.append(f"{key}: num_workers and autoscale are both set; keep one (num_workers=null for autoscale)")
    elif cluster.get("num_workers") is None and not cluster.get("autoscale"):
        errors.append(f"{key}.num_workers is missing: 0 for a single node, or set autoscale.min/max_workers")
    availability = (cluster.get("azure_attributes") or {}).get("availability")
    choices = ("SPOT_AZURE", "SPOT_WITH_FALLBACK_AZURE", "ON_DEMAND_AZURE")
    if availability is not None and availability not in choices:
        errors.append(f"{key}.azure_attributes.availability={availability}: choose one of {', '.join(choices)}")
    return errors


def _library_problems(libraries: Any, key: str) -> list[str]:
    from databricks.sdk.service.compute import Library

    if not isinstance(libraries, list):
        return [f"{key}={libraries}: a list of libraries, e.g. [{{pypi: {{package: peft}}}}]"]
    errors = []
    for i, library in enumerate(libraries):
        if not isinstance(library, dict) or not library or _unknown_keys(library, Library):
            errors.append(f"{key}[{i}]={library}: a library is one of {{pypi: {{package: ...}}}}, {{whl: ...}}, ...")
    return errors


def checked(launcher: Any) -> tuple[Options, str | None]:
    """The options and the app's tracking store, every problem of both reported at once."""
    from sweeps.errors import ConfigError

    errors: list[str] = []
    opts = uri = None
    try:
        opts = Options.parse(launcher.options)
    except ConfigError as e:
        errors += e.errors
    try:
        assert launcher.config is not None
        uri = _tracking_uri(launcher.config)
    except ConfigError as e:
        errors += e.errors
    if errors or opts is None:
        raise ConfigError(*errors)
    return opts, uri


def _tracking_uri(config: DictConfig) -> str | None:
    """The MLflow store of an app that tracks with sweeps.tracking; trials on a cluster must reach it."""
    tracking = OmegaConf.select(config, "tracking", default=None)
    if not isinstance(tracking, DictConfig) or "uri" not in tracking:
        return None
    from sweeps import tracking as sweeps_tracking
    from sweeps.errors import ConfigError

    uri = sweeps_tracking.resolve_uri(tracking)  # type: ignore[arg-type]
    if not uri.startswith(("http://", "https://", "databricks")):
        raise ConfigError(
            f"tracking.uri={uri}: trials on Databricks cannot write to this machine's MLflow store; set "
            "tracking.uri=databricks (Databricks managed MLflow) or an http(s) MLflow server the clusters reach"
        )
    return uri


# ---------------------------------------------------------------- the workspace
def connect(opts: Options) -> tuple[Any, dict[str, Any]]:
    """Check credentials, runtime, node types, cluster and volume; return the client and what the checks
    learnt. Every problem is a ConfigError, raised before anything is submitted."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    from sweeps.errors import ConfigError

    quick = client_for(opts.profile, CHECK_RETRY_S, CHECK_HTTP_TIMEOUT_S)
    host = quick.config.host
    try:
        user = quick.current_user.me()
    except Exception as e:
        raise ConfigError(connection_problem(e, host)) from None
    errors: list[str] = []
    facts: dict[str, Any] = {"host": host, "user": user.user_name}
    try:
        errors += _check_compute(quick, opts, facts)
        errors += _check_volume(quick, opts)
    except Exception as e:
        errors.append(connection_problem(e, host))
    if errors:
        raise ConfigError(*errors)
    client = WorkspaceClient(config=Config(profile=opts.profile))
    return client, facts


def client_for(profile: str | None, retry_s: float, http_timeout_s: float) -> Any:
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    from sweeps.errors import ConfigError
    from sweeps.secrets import mask_text

    try:
        return WorkspaceClient(
            config=Config(profile=profile, retry_timeout_seconds=int(retry_s), http_timeout_seconds=http_timeout_s)
        )
    except ValueError as e:
        where = f"{key('profile')}={profile}" if profile else "Databricks credentials"
        reason = mask_text(str(e).splitlines()[0])
        raise ConfigError(
            f"{where}: no usable credentials ({reason}); set DATABRICKS_HOST and DATABRICKS_TOKEN, or "
            "DATABRICKS_CONFIG_PROFILE (a profile of ~/.databrickscfg), or the Azure service principal "
            "variables ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID with DATABRICKS_HOST"
        ) from None


def connection_problem(error: Exception, host: str) -> str:
    from databricks.sdk.errors import DatabricksError, PermissionDenied, Unauthenticated

    from sweeps.secrets import mask_text

    reason = mask_text(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    if isinstance(error, (Unauthenticated, PermissionDenied)):
        return (
            f"the Databricks workspace at {host} refused the credentials ({reason}); check DATABRICKS_TOKEN, "
            f"the service principal variables or {key('profile')}"
        )
    if isinstance(error, DatabricksError):
        return f"the Databricks workspace at {host} answered: {reason}"
    cause = error.__cause__ or error.__context__
    detail = mask_text(str(cause).splitlines()[0]) if cause is not None and str(cause) else reason
    return (
        f"the Databricks workspace at {host} does not answer ({detail}); check "
        "DATABRICKS_HOST (or the profile's host) and the network"
    )


def _check_compute(client: Any, opts: Options, facts: dict[str, Any]) -> list[str]:
    from databricks.sdk.errors import InvalidParameterValue, NotFound

    errors: list[str] = []
    node_types = {n.node_type_id: n for n in client.clusters.list_node_types().node_types or []}
    if opts.existing_cluster_id:
        try:
            cluster = client.clusters.get(opts.existing_cluster_id)
        except (NotFound, InvalidParameterValue):
            return [
                f"{key('existing_cluster_id')}={opts.existing_cluster_id}: no such cluster in this workspace "
                "(python -m sweeps databricks check lists what it found)"
            ]
        node = node_types.get(cluster.node_type_id or "")
        facts.update(gpus=(node.num_gpus or 0) if node else 0, workers=cluster.num_workers or 0)
        return errors
    spec = opts.new_cluster or {}
    versions = [v.key for v in client.clusters.spark_versions().versions or [] if v.key]
    version = str(spec.get("spark_version"))
    if version not in versions:
        ml_gpu = sorted((v for v in versions if "gpu-ml" in v), reverse=True)[:3]
        errors.append(
            f"{key('new_cluster')}.spark_version={version}: not a runtime of this workspace; ML GPU runtimes "
            f"here: {', '.join(ml_gpu) or 'none'}"
        )
    node = None
    for field in ("node_type_id", "driver_node_type_id"):
        value = spec.get(field)
        if value and value not in node_types:
            gpu_types = sorted(n for n, t in node_types.items() if (t.num_gpus or 0) > 0)[:5]
            errors.append(
                f"{key('new_cluster')}.{field}={value}: not a node type of this workspace; GPU node types "
                f"here: {', '.join(gpu_types) or 'none'}"
            )
        elif value and field == "node_type_id":
            node = node_types[value]
    gpus = (node.num_gpus or 0) if node is not None else 0
    if node is not None and version in versions:
        if gpus > 0 and "gpu" not in version:
            errors.append(
                f"{key('new_cluster')}.spark_version={version}: node type {node.node_type_id} has GPUs and "
                "needs a GPU runtime (…-gpu-ml-…)"
            )
        if gpus == 0 and "gpu" in version:
            errors.append(
                f"{key('new_cluster')}.spark_version={version}: a GPU runtime on node type "
                f"{node.node_type_id}, which has no GPU; pick a GPU node type or a CPU runtime"
            )
    if "-ml-" not in version and not errors:
        log.warning(f"{key('new_cluster')}.spark_version={version} is not an ML runtime: pip installs torch etc.")
    facts.update(gpus=gpus, workers=_workers(spec))
    return errors


def _check_volume(client: Any, opts: Options) -> list[str]:
    from databricks.sdk.errors import NotFound, PermissionDenied

    root = volume_root(opts.upload_dir)
    try:
        client.files.get_directory_metadata(root)
    except (NotFound, PermissionDenied):
        return [
            f"{key('upload_dir')}={opts.upload_dir}: the volume {root} does not exist or this identity cannot "
            "read it; create it (CREATE VOLUME) or grant READ VOLUME and WRITE VOLUME"
        ]
    return []
