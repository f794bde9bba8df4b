"""A Databricks workspace on 127.0.0.1 for tests, spoken to through the real databricks-sdk.

It serves the REST paths the SDK calls: jobs runs/submit, runs/get, runs/get-output, runs/cancel, runs/list
(API 2.2), the Files API (/api/2.0/fs/files and /fs/directories), clusters spark-versions, list-node-types,
get and delete (API 2.1), and the current user (SCIM Me). Request bodies are checked against the SDK's
own dataclasses and rejected as the service rejects them (unknown fields, unknown runtime or node type, a
cluster spec that is both or neither existing and new, ...). Each submitted run really executes, as a local
subprocess on a one-node "cluster": the python wheel task's libraries are unpacked from the volume into the
cluster's library folder and its entry point runs with the task's parameters (dynamic value references such
as {{job.run_id}} filled in). Runs move PENDING -> RUNNING -> TERMINATING -> TERMINATED with result_state
SUCCESS, FAILED, CANCELED or TIMEDOUT, or end in INTERNAL_ERROR when their cluster fails to start.

Faults are injected per test through `workspace.faults`: a cluster launch failure, a slow cluster start,
HTTP errors (429 with Retry-After, 500, 503) answered on given paths, a submit that creates its run and
still answers with an error.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

WORKSPACE_ID = "6051921418418893"
USER = "sweeper@example.com"

SPARK_VERSIONS = [
    ("15.4.x-gpu-ml-scala2.12", "15.4 LTS ML (includes Apache Spark 3.5.0, GPU, Scala 2.12)"),
    ("15.4.x-cpu-ml-scala2.12", "15.4 LTS ML (includes Apache Spark 3.5.0, Scala 2.12)"),
    ("15.4.x-scala2.12", "15.4 LTS (includes Apache Spark 3.5.0, Scala 2.12)"),
    ("16.4.x-gpu-ml-scala2.12", "16.4 LTS ML (includes Apache Spark 3.5.2, GPU, Scala 2.12)"),
]
NODE_TYPES = [
    ("Standard_NC4as_T4_v3", 4, 28672, 1, "Standard_NC4as_T4_v3 (1 x T4)"),
    ("Standard_NC6s_v3", 6, 114688, 1, "Standard_NC6s_v3 (1 x V100)"),
    ("Standard_NC24ads_A100_v4", 24, 225280, 1, "Standard_NC24ads_A100_v4 (1 x A100)"),
    ("Standard_D4ds_v5", 4, 16384, 0, "Standard_D4ds_v5"),
]
# Dynamic value references a task parameter may use, and what the fake fills in.
REFERENCES = ("job.run_id", "task.run_id", "job.id", "task.name", "run_id", "job_id")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Answer(Exception):
    def __init__(self, body: Any) -> None:
        self.body = body


def invalid(message: str) -> ApiError:
    return ApiError(400, "INVALID_PARAMETER_VALUE", message)


@dataclass
class Faults:
    """What goes wrong, set by a test."""

    # New job clusters of this many next runs fail to start (the run ends in INTERNAL_ERROR with the cloud's
    # reason); -1: all of them.
    launch_failures: int = 0
    # Seconds a run waits for its cluster before it starts.
    start_delay: float = 0.0
    # Path -> HTTP statuses answered, one per request, before the path is served again (429, 500, 503).
    http_errors: dict[str, list[int]] = field(default_factory=dict)
    # Submits that create their run but answer 503 (the client must not get a second run on retry).
    submit_created_then_503: int = 0


@dataclass
class Run:
    run_id: int
    task_run_id: int
    job_id: int
    body: dict[str, Any]
    task: dict[str, Any]
    cluster_id: str
    created: float
    life: str = "PENDING"
    result: str | None = None
    message: str = "Waiting for cluster"
    termination: dict[str, str] | None = None
    start_time: int = 0
    end_time: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    cancel_requested: bool = False
    launch_fails: bool = False
    timed_out: bool = False
    error: str | None = None
    error_trace: str | None = None


class FakeWorkspace:
    """The fake; `start()` gives its URL, `stop()` ends it and every run still going."""

    def __init__(self, root: Path, token: str, volumes: tuple[str, ...] = ("/Volumes/main/ml/sweeps",)) -> None:
        self.root = root
        self.token = token
        self.cluster_token = "dapi-cluster-" + secrets.token_hex(12)
        self.volumes = set(volumes)
        self.faults = Faults()
        self.cancel_grace_s = 5.0
        self.python = sys.executable
        self.extra_env: dict[str, str] = {}
        self.existing_clusters: dict[str, dict[str, Any]] = {}
        self.clusters: dict[str, dict[str, Any]] = {}
        self.runs: dict[int, Run] = {}
        self.tokens: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.timeline: list[tuple[float, str, str]] = []
        self.bodies: list[tuple[str, Any]] = []
        self.lock = threading.RLock()
        self._ids = iter(range(1000 + secrets.randbelow(9000) * 1000, 10**12))
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> str:
        workspace = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                workspace._handle(self, "GET")

            def do_POST(self) -> None:
                workspace._handle(self, "POST")

            def do_PUT(self) -> None:
                workspace._handle(self, "PUT")

            def do_HEAD(self) -> None:
                workspace._handle(self, "HEAD")

            def do_DELETE(self) -> None:
                workspace._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fake-databricks", daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            if run.proc is not None and run.proc.poll() is None:
                _kill(run.proc, signal.SIGKILL)
                run.proc.wait()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ------------------------------------------------------------ what tests look at
    def calls(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and p == path)

    def submits(self) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b in self.bodies if p == "/api/2.2/jobs/runs/submit"]

    def cancels(self) -> list[int]:
        with self.lock:
            return [int(b["run_id"]) for p, b in self.bodies if p == "/api/2.2/jobs/runs/cancel"]

    def run_states(self) -> dict[int, tuple[str, str | None]]:
        with self.lock:
            return {r.run_id: (r.life, r.result) for r in self.runs.values()}

    def volume_file(self, path: str) -> Path:
        return self.root / "volumes" / path.lstrip("/")

    def create_volume(self, path: str) -> None:
        self.volumes.add(path)
        self.volume_file(path).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ HTTP
    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(request.path)
        path = unquote(parsed.path)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((method, path))
            self.timeline.append((time.time(), method, path))
        status, headers, payload = 200, {"Content-Type": "application/json"}, b"{}"
        try:
            if method == "GET" and path == "/.well-known/databricks-config":  # discovery needs no credentials
                raise _Answer({"oidc_endpoint": f"{self.url}/oidc", "workspace_id": WORKSPACE_ID, "cloud": "azure"})
            self._authenticate(request.headers.get("Authorization", ""))
            queued = self.faults.http_errors.get(path)
            if queued:
                self._fault(queued.pop(0))
            status, headers, payload = self._route(method, path, query, raw, request.headers)
        except _Answer as answer:
            payload = json.dumps(answer.body).encode()
        except ApiError as e:
            status = e.status
            headers = {"Content-Type": "application/json", **e.headers}
            payload = json.dumps({"error_code": e.code, "message": e.message}).encode()
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        if "Content-Length" not in headers:
            request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if method != "HEAD" and payload:
            request.wfile.write(payload)

    def _authenticate(self, header: str) -> None:
        if not header.startswith("Bearer "):
            raise ApiError(
                401, "UNAUTHENTICATED", "Credential was not sent or was of an unsupported type for this API."
            )
        if header[7:] not in (self.token, self.cluster_token):
            raise ApiError(403, "PERMISSION_DENIED", "Invalid access token.")

    @staticmethod
    def _fault(status: int) -> None:
        if status == 429:
            raise ApiError(
                429,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests. Please wait a moment and try again.",
                {"Retry-After": "1"},
            )
        if status == 503:
            raise ApiError(503, "TEMPORARILY_UNAVAILABLE", "The service is temporarily unavailable.")
        raise ApiError(status, "INTERNAL_ERROR", "Internal server error (fault injected by the test).")

    def _route(self, method: str, path: str, query: dict[str, str], raw: bytes, headers: Any) -> tuple:
        if path.startswith("/api/2.0/fs/files/"):
            return self._files(method, path[len("/api/2.0/fs/files") :], query, raw, headers)
        if path.startswith("/api/2.0/fs/directories/"):
            return self._directories(method, path[len("/api/2.0/fs/directories") :])
        routes = {
            ("GET", "/api/2.0/preview/scim/v2/Me"): self._me,
            ("POST", "/api/2.2/jobs/runs/submit"): self._submit,
            ("GET", "/api/2.2/jobs/runs/get"): self._get_run,
            ("GET", "/api/2.2/jobs/runs/get-output"): self._get_output,
            ("POST", "/api/2.2/jobs/runs/cancel"): self._cancel,
            ("GET", "/api/2.2/jobs/runs/list"): self._list_runs,
            ("GET", "/api/2.1/clusters/spark-versions"): self._spark_versions,
            ("GET", "/api/2.1/clusters/list-node-types"): self._node_types,
            ("GET", "/api/2.1/clusters/get"): self._get_cluster,
            ("POST", "/api/2.1/clusters/delete"): self._delete_cluster,
        }
        handler = routes.get((method, path))
        if handler is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"No API found for '{method} {path}'")
        body: Any = None
        if method == "POST":
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request") from None
            if not isinstance(body, dict):
                raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body of the request")
            with self.lock:
                self.bodies.append((path, body))
        result = handler(body if method == "POST" else query)
        return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()

    # ------------------------------------------------------------ identity and clusters
    def _me(self, query: dict[str, str]) -> dict[str, Any]:
        return {"id": "7021954230474931", "userName": USER, "displayName": "Sweeper", "active": True}

    def _spark_versions(self, query: dict[str, str]) -> dict[str, Any]:
        return {"versions": [{"key": k, "name": n} for k, n in SPARK_VERSIONS]}

    def _node_types(self, query: dict[str, str]) -> dict[str, Any]:
        return {
            "node_types": [
                {
                    "node_type_id": n,
                    "num_cores": float(cores),
                    "memory_mb": memory,
                    "num_gpus": gpus,
                    "description": description,
                    "instance_type_id": n,
                    "category": "GPU Accelerated" if gpus else "General Purpose",
                }
                for n, cores, memory, gpus, description in NODE_TYPES
            ]
        }

    def _get_cluster(self, query: dict[str, str]) -> dict[str, Any]:
        cluster_id = query.get("cluster_id", "")
        with self.lock:
            cluster = self.existing_clusters.get(cluster_id) or self.clusters.get(cluster_id)
        if cluster is None:
            raise invalid(f"Cluster {cluster_id} does not exist")
        return cluster

    def _delete_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self._get_cluster({"cluster_id": str(body.get("cluster_id"))})
        cluster["state"] = "TERMINATED"
        return {}

    # ------------------------------------------------------------ runs
    def _submit(self, body: dict[str, Any]) -> dict[str, Any]:
        from databricks.sdk.service.jobs import JobsAPI

        allowed = set(inspect.signature(JobsAPI.submit).parameters) - {"self"}
        for key in body:
            if key not in allowed:
                raise invalid(f"Invalid JSON given in the body of the request - unknown field '{key}'")
        token = body.get("idempotency_token")
        if token is not None and (not isinstance(token, str) or len(token) > 64):
            raise invalid("idempotency_token must be a string of at most 64 characters")
        timeout = body.get("timeout_seconds", 0)
        if not isinstance(timeout, int) or timeout < 0:
            raise invalid(f"timeout_seconds must be a non-negative integer, got {timeout!r}")
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise invalid("At least one task is required.")
        if len(tasks) != 1:
            raise invalid("The fake workspace runs single-task one-time runs only.")
        task = self._check_task(tasks[0])
        with self.lock:
            if token is not None and token in self.tokens:
                return {"run_id": self.tokens[token]}
            run_id, task_run_id, job_id = next(self._ids), next(self._ids), next(self._ids)
            cluster_id = task.get("existing_cluster_id") or _cluster_id()
            run = Run(run_id, task_run_id, job_id, body, task, cluster_id, time.time())
            self.runs[run_id] = run
            if token is not None:
                self.tokens[token] = run_id
            if "new_cluster" in task:
                self.clusters[cluster_id] = {
                    "cluster_id": cluster_id,
                    "cluster_name": f"job-{job_id}-run-{task_run_id}",
                    "state": "PENDING",
                    "cluster_source": "JOB",
                    **{
                        k: v
                        for k, v in task["new_cluster"].items()
                        if k in ("spark_version", "node_type_id", "num_workers")
                    },
                }
            if "new_cluster" in task and self.faults.launch_failures:
                run.launch_fails = True
                self.faults.launch_failures -= 1 if self.faults.launch_failures > 0 else 0
            created_then_fail = self.faults.submit_created_then_503 > 0
            if created_then_fail:
                self.faults.submit_created_then_503 -= 1
        threading.Thread(target=self._execute, args=(run,), name=f"fake-run-{run_id}", daemon=True).start()
        if created_then_fail:
            self._fault(503)
        return {"run_id": run_id}

    def _check_task(self, task: Any) -> dict[str, Any]:
        from databricks.sdk.service import compute, jobs

        if not isinstance(task, dict):
            raise invalid("Each task must be an object")
        unknown = _unknown(task, jobs.SubmitTask)
        if unknown:
            raise invalid(f"Invalid JSON given in the body of the request - unknown field 'tasks.{unknown[0]}'")
        parsed = jobs.SubmitTask.from_dict(task)
        if not parsed.task_key:
            raise invalid("Missing required field: task_key")
        kinds = [f.name for f in dataclasses.fields(jobs.SubmitTask) if f.name.endswith("_task") and task.get(f.name)]
        if len(kinds) != 1:
            raise invalid(f"Exactly one task type must be set, got {kinds or 'none'}")
        if kinds[0] != "python_wheel_task":
            raise invalid(f"The fake workspace runs python_wheel_task only, not {kinds[0]}")
        wheel_task = parsed.python_wheel_task
        assert wheel_task is not None
        if not wheel_task.package_name:
            raise invalid("Missing required field: python_wheel_task.package_name")
        if wheel_task.named_parameters and wheel_task.parameters:
            raise invalid("parameters and named_parameters cannot both be set")
        for value in wheel_task.parameters or []:
            for reference in re.findall(r"\{\{\s*([^}]*?)\s*\}\}", value):
                if reference not in REFERENCES:
                    raise invalid(f"Invalid dynamic value reference '{{{{{reference}}}}}' in task parameters")
        computes = [
            k for k in ("existing_cluster_id", "new_cluster", "job_cluster_key", "environment_key") if task.get(k)
        ]
        if len(computes) != 1:
            raise invalid(
                "Exactly one of existing_cluster_id, new_cluster, job_cluster_key or environment_key must be "
                f"specified for task '{parsed.task_key}', got {computes or 'none'}"
            )
        if computes[0] in ("job_cluster_key", "environment_key"):
            raise invalid(f"{computes[0]} is not available for one-time runs in this workspace")
        if computes[0] == "existing_cluster_id" and task["existing_cluster_id"] not in self.existing_clusters:
            raise invalid(f"Cluster {task['existing_cluster_id']} does not exist")
        if computes[0] == "new_cluster":
            self._check_cluster(task["new_cluster"])
        for library in task.get("libraries") or []:
            if not isinstance(library, dict) or _unknown(library, compute.Library) or not library:
                raise invalid(f"Invalid library specification {library}")
            whl = library.get("whl")
            if whl is not None and not str(whl).startswith(("/Volumes/", "/Workspace/", "dbfs:/", "abfss://")):
                raise invalid(f"Library whl path {whl} must be a volume, workspace or cloud storage path")
        return task

    def _check_cluster(self, spec: Any) -> None:
        from databricks.sdk.service import compute

        if not isinstance(spec, dict):
            raise invalid("new_cluster must be an object")
        unknown = _unknown(spec, compute.ClusterSpec)
        if unknown:
            raise invalid(f"Invalid JSON given in the body of the request - unknown field 'new_cluster.{unknown[0]}'")
        compute.ClusterSpec.from_dict(spec)
        if spec.get("spark_version") not in [k for k, _ in SPARK_VERSIONS]:
            raise invalid(f"Invalid spark version {spec.get('spark_version')}.")
        nodes = {n: gpus for n, _, _, gpus, _ in NODE_TYPES}
        node = spec.get("node_type_id")
        if node not in nodes:
            raise invalid(f"Node type {node} is not supported.")
        if nodes[node] and "gpu" not in spec["spark_version"]:
            raise invalid(f"Node type {node} requires a GPU runtime; {spec['spark_version']} is not one.")
        if ("num_workers" in spec) == ("autoscale" in spec):
            raise invalid("Exactly one of num_workers or autoscale must be specified for new_cluster")
        availability = (spec.get("azure_attributes") or {}).get("availability")
        if availability is not None:
            compute.AzureAvailability(availability)

    def _get_run(self, query: dict[str, str]) -> dict[str, Any]:
        return self._run_json(self._run(query.get("run_id")))

    def _get_output(self, query: dict[str, str]) -> dict[str, Any]:
        run_id = int(query.get("run_id") or 0)
        with self.lock:
            if run_id in self.runs:
                raise invalid(
                    "Retrieving the output of runs with multiple tasks is not supported. Please retrieve the "
                    "output of each individual task run instead."
                )
            run = next((r for r in self.runs.values() if r.task_run_id == run_id), None)
        if run is None:
            raise invalid(f"Run {run_id} does not exist.")
        output: dict[str, Any] = {"metadata": self._task_json(run)}
        if run.log_path is not None and run.log_path.exists():
            text = run.log_path.read_bytes()[-5 * 1024 * 1024 :].decode(errors="replace")
            output.update(logs=text, logs_truncated=False)
        if run.error:
            output.update(error=run.error, error_trace=run.error_trace or "")
        return output

    def _cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body.get("run_id"))
        with self.lock:
            if run.life in ("PENDING", "RUNNING"):
                run.cancel_requested = True
                if run.life == "RUNNING":
                    run.life = "TERMINATING"
        return {}

    def _list_runs(self, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            runs = sorted(self.runs.values(), key=lambda r: -r.created)
        if query.get("active_only") == "true":
            runs = [r for r in runs if r.life in ("PENDING", "RUNNING", "TERMINATING", "QUEUED")]
        if query.get("completed_only") == "true":
            runs = [r for r in runs if r.life in ("TERMINATED", "INTERNAL_ERROR", "SKIPPED")]
        if query.get("run_type") not in (None, "SUBMIT_RUN"):
            runs = []
        return {"runs": [self._run_json(r) for r in runs], "has_more": False}

    def _run(self, run_id: Any) -> Run:
        try:
            key = int(run_id)
        except (TypeError, ValueError):
            raise invalid(f"Invalid run_id {run_id!r}") from None
        with self.lock:
            run = self.runs.get(key)
        if run is None:
            raise invalid(f"Run {run_id} does not exist.")
        return run

    def _state(self, run: Run) -> dict[str, Any]:
        state: dict[str, Any] = {"life_cycle_state": run.life, "state_message": run.message}
        if run.result is not None:
            state["result_state"] = run.result
            state["user_cancelled_or_timedout"] = run.result in ("CANCELED", "TIMEDOUT")
        return state

    def _status(self, run: Run) -> dict[str, Any]:
        life = {"INTERNAL_ERROR": "TERMINATED"}.get(run.life, run.life)
        status: dict[str, Any] = {"state": life}
        if run.termination is not None:
            status["termination_details"] = run.termination
        return status

    def _task_json(self, run: Run) -> dict[str, Any]:
        task = dict(run.task)
        task.update(
            run_id=run.task_run_id,
            state=self._state(run),
            status=self._status(run),
            cluster_instance={"cluster_id": run.cluster_id},
            start_time=run.start_time,
            end_time=run.end_time,
            attempt_number=0,
            run_page_url=self._page(run, run.task_run_id),
        )
        return task

    def _run_json(self, run: Run) -> dict[str, Any]:
        return {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "number_in_job": run.run_id,
            "creator_user_name": USER,
            "original_attempt_run_id": run.run_id,
            "state": self._state(run),
            "status": self._status(run),
            "start_time": int(run.created * 1000),
            "end_time": run.end_time,
            "run_name": run.body.get("run_name", "Untitled"),
            "run_page_url": self._page(run, run.run_id),
            "run_type": "SUBMIT_RUN",
            "tasks": [self._task_json(run)],
            "format": "MULTI_TASK",
        }

    def _page(self, run: Run, run_id: int) -> str:
        return f"{self.url}/?o={WORKSPACE_ID}#job/{run.job_id}/run/{run_id}"

    # ------------------------------------------------------------ executing a run
    def _end(self, run: Run, life: str, result: str | None, message: str, termination: dict[str, str]) -> None:
        with self.lock:
            run.life, run.result, run.message, run.termination = life, result, message, termination
            run.end_time = int(time.time() * 1000)
            cluster = self.clusters.get(run.cluster_id)
            if cluster is not None:
                cluster["state"] = "TERMINATED"

    def _execute(self, run: Run) -> None:
        deadline = time.monotonic() + self.faults.start_delay
        while time.monotonic() < deadline and not run.cancel_requested:
            time.sleep(0.05)
        if run.cancel_requested:
            self._end(run, "TERMINATED", "CANCELED", "Run was cancelled.", _term("USER_CANCELED", "SUCCESS"))
            return
        if run.launch_fails:
            message = (
                f"Cluster '{run.cluster_id}' was terminated. Reason: CLOUD_PROVIDER_LAUNCH_FAILURE (CLOUD_FAILURE). "
                "Parameters: azure_error_code:OperationNotAllowed, azure_error_message:Operation could not be "
                "completed as it results in exceeding approved standardNCASv3_T4Family Cores quota."
            )
            self._end(run, "INTERNAL_ERROR", "FAILED", message, _term("CLUSTER_ERROR", "CLOUD_FAILURE", message))
            return
        cluster_dir = self.root / "clusters" / run.cluster_id
        try:
            command, env = self._command(run, cluster_dir)
        except ApiError as e:
            self._end(
                run,
                "INTERNAL_ERROR",
                "FAILED",
                e.message,
                _term("LIBRARY_INSTALLATION_ERROR", "CLIENT_ERROR", e.message),
            )
            return
        run.log_path = cluster_dir / f"run-{run.task_run_id}.log"
        with self.lock:
            if run.cancel_requested:
                self._end(run, "TERMINATED", "CANCELED", "Run was cancelled.", _term("USER_CANCELED", "SUCCESS"))
                return
            run.life, run.message, run.start_time = "RUNNING", "In run", int(time.time() * 1000)
            cluster = self.clusters.get(run.cluster_id)
            if cluster is not None:
                cluster["state"] = "RUNNING"
            with open(run.log_path, "wb") as log:
                run.proc = subprocess.Popen(
                    command, cwd=cluster_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        timeout = run.task.get("timeout_seconds") or run.body.get("timeout_seconds") or 0
        stop_at: float | None = None
        while run.proc.poll() is None:
            if stop_at is None and (run.cancel_requested or (timeout and time.time() - run.created > timeout)):
                run.timed_out = not run.cancel_requested
                with self.lock:
                    run.life = "TERMINATING"
                _kill(run.proc, signal.SIGTERM)
                stop_at = time.monotonic() + self.cancel_grace_s
            elif stop_at is not None and time.monotonic() > stop_at:
                _kill(run.proc, signal.SIGKILL)
            time.sleep(0.05)
        code = run.proc.wait()
        if run.cancel_requested:
            self._end(run, "TERMINATED", "CANCELED", "Run was cancelled.", _term("USER_CANCELED", "SUCCESS"))
        elif run.timed_out:
            message = f"Run timed out after {timeout} seconds."
            self._end(run, "TERMINATED", "TIMEDOUT", message, _term("RUN_EXECUTION_ERROR", "CLIENT_ERROR", message))
        elif code == 0:
            self._end(run, "TERMINATED", "SUCCESS", "", _term("SUCCESS", "SUCCESS"))
        else:
            run.error, run.error_trace = _error_of(run.log_path)
            message = "Workload failed, see run output for details"
            self._end(run, "TERMINATED", "FAILED", message, _term("RUN_EXECUTION_ERROR", "CLIENT_ERROR", message))

    def _command(self, run: Run, cluster_dir: Path) -> tuple[list[str], dict[str, str]]:
        """Install the task's wheels into the cluster's library folder; the entry point's command and env."""
        libraries = cluster_dir / "libraries"
        libraries.mkdir(parents=True, exist_ok=True)
        task = run.task["python_wheel_task"]
        entry: tuple[str, str] | None = None
        for library in run.task.get("libraries") or []:
            if "whl" not in library:
                continue
            source = self.volume_file(library["whl"])
            if not source.is_file():
                raise ApiError(
                    400,
                    "LIBRARY",
                    f"Library installation failed for library due to user error. "
                    f"Error messages: File {library['whl']} does not exist",
                )
            with zipfile.ZipFile(source) as wheel:
                wheel.extractall(libraries)
                found = _entry_point(wheel, task["package_name"], task.get("entry_point"))
                entry = entry or found
        if entry is None:
            module, attr = task["package_name"], task.get("entry_point") or "main"
        else:
            module, attr = entry
        values = {
            "job.run_id": run.run_id,
            "run_id": run.run_id,
            "task.run_id": run.task_run_id,
            "job.id": run.job_id,
            "job_id": run.job_id,
            "task.name": run.task.get("task_key"),
        }
        parameters = [
            re.sub(r"\{\{\s*([^}]*?)\s*\}\}", lambda m: str(values[m.group(1)]), p)
            for p in task.get("parameters") or []
        ]
        bootstrap = (
            "import importlib, sys; f = importlib.import_module(sys.argv[1]); "
            "[f := getattr(f, part) for part in sys.argv[2].split('.')]; "
            "sys.argv = sys.argv[3:]; sys.exit(f())"
        )
        command = [self.python, "-c", bootstrap, module, attr, task.get("entry_point") or module, *parameters]
        cluster = run.task.get("new_cluster") or {}
        workers = cluster.get("num_workers") or (cluster.get("autoscale") or {}).get("min_workers") or 1
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(cluster_dir),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(libraries),
            "PYTHONUNBUFFERED": "1",
            "DATABRICKS_HOST": self.url,
            "DATABRICKS_TOKEN": self.cluster_token,
            # the cluster's Spark: the driver's Python, one local task slot per worker node
            "PYSPARK_PYTHON": self.python,
            "PYSPARK_SUBMIT_ARGS": f"--master local[{workers}] --conf spark.ui.enabled=false pyspark-shell",
            **{k: str(v) for k, v in cluster.get("spark_env_vars", {}).items()},
            **self.extra_env,
        }
        return command, env

    # ------------------------------------------------------------ Files API
    def _volume_of(self, path: str) -> str:
        match = re.match(r"^(/Volumes/[^/]+/[^/]+/[^/]+)(/|$)", path)
        if match is None or ".." in path.split("/"):
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Invalid path {path}: expected /Volumes/<catalog>/<schema>/<volume>/...",
            )
        if match.group(1) not in self.volumes:
            raise ApiError(404, "NOT_FOUND", f"Volume '{match.group(1)[9:].replace('/', '.')}' does not exist.")
        return match.group(1)

    def _files(self, method: str, path: str, query: dict[str, str], raw: bytes, headers: Any) -> tuple:
        self._volume_of(path)
        local = self.volume_file(path)
        if method == "PUT":
            if local.is_dir():
                raise ApiError(409, "ALREADY_EXISTS", f"{path} is a directory")
            if local.exists() and query.get("overwrite") != "true":
                raise ApiError(409, "ALREADY_EXISTS", f"The file being created already exists: {path}")
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(f".{local.name}.{threading.get_ident()}")
            partial.write_bytes(raw)
            os.replace(partial, local)
            return 204, {}, b""
        if not local.is_file():
            raise ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {path}")
        if method == "DELETE":
            local.unlink()
            return 204, {}, b""
        data = local.read_bytes()
        meta = {
            "Content-Type": "application/octet-stream",
            "Last-Modified": formatdate(local.stat().st_mtime, usegmt=True),
        }
        if method == "HEAD":
            return 200, {**meta, "Content-Length": str(len(data))}, b""
        status = 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            meta["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            data, status = data[start:end], 206
        return status, meta, data

    def _directories(self, method: str, path: str) -> tuple:
        path = path.rstrip("/") or "/"
        self._volume_of(path)
        local = self.volume_file(path)
        if method == "PUT":
            if local.is_file():
                raise ApiError(409, "ALREADY_EXISTS", f"{path} is a file")
            local.mkdir(parents=True, exist_ok=True)
            return 204, {}, b""
        if not local.is_dir():
            raise ApiError(404, "NOT_FOUND", f"The directory being accessed is not found: {path}")
        if method == "HEAD":
            return 200, {}, b""
        if method == "GET":
            contents = [
                {
                    "path": f"{path}/{p.name}",
                    "name": p.name,
                    "is_directory": p.is_dir(),
                    **({"file_size": p.stat().st_size} if p.is_file() else {}),
                    "last_modified": int(p.stat().st_mtime * 1000),
                }
                for p in sorted(local.iterdir())
                if not p.name.startswith(".")
            ]
            return 200, {"Content-Type": "application/json"}, json.dumps({"contents": contents}).encode()
        raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not supported on directories")


def _unknown(data: dict[str, Any], cls: type) -> list[str]:
    names = {f.name for f in dataclasses.fields(cls)}
    return sorted(k for k in data if k not in names)


def _cluster_id() -> str:
    return time.strftime("%m%d-%H%M%S-") + secrets.token_hex(4)


def _term(code: str, kind: str, message: str = "") -> dict[str, str]:
    return {"code": code, "type": kind, "message": message}


def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _entry_point(wheel: zipfile.ZipFile, package: str, name: str | None) -> tuple[str, str] | None:
    """The module and attribute of the wheel's entry point `name`, when the wheel is `package`'s."""
    normalized = re.sub(r"[-_.]+", "_", package).lower()
    for info in wheel.namelist():
        if not info.endswith(".dist-info/entry_points.txt"):
            continue
        if re.sub(r"[-_.]+", "_", info.split("-")[0]).lower() != normalized:
            continue
        groups: dict[str, dict[str, str]] = {}
        group = ""
        for line in wheel.read(info).decode().splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                group = line[1:-1]
            elif "=" in line and group:
                key, value = (part.strip() for part in line.split("=", 1))
                groups.setdefault(group, {})[key] = value
        ordered = [groups.get("console_scripts", {})] + [v for k, v in groups.items() if k != "console_scripts"]
        for entries in ordered:
            if name in entries:
                module, _, attr = entries[name].partition(":")
                return module.strip(), attr.strip() or "main"
    return None


def _error_of(log_path: Path | None) -> tuple[str | None, str | None]:
    """The last exception of a failed run's output, as runs/get-output reports it."""
    if log_path is None or not log_path.exists():
        return None, None
    text = log_path.read_text(errors="replace")
    start = text.rfind("Traceback (most recent call last)")
    trace = text[start:] if start >= 0 else "\n".join(text.splitlines()[-20:])
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "the process exited with a non-zero status"), trace


def check_json(data: bytes, cls: type) -> Any:
    """Parse an answer of the fake with the SDK's dataclass (used by the fake's own tests)."""
    return cls.from_dict(json.load(io.BytesIO(data)))
