"""`python -m sweeps ui`: the MLflow UI on the project's tracking store."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from sweeps.tracking import TrackingConfig, artifact_root, resolve_uri


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--uri", default=None, help="tracking store (default: as runs use it)")
    args = parser.parse_args(argv)
    uri = resolve_uri(TrackingConfig(uri=args.uri))
    if uri.startswith(("http://", "https://", "databricks")):
        print(f"error: tracking.uri={uri} is a server already; open it in a browser", file=sys.stderr)
        return 2
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    if mlflow is None:
        print("error: the mlflow command is not installed; pip install mlflow", file=sys.stderr)
        return 2
    command = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    root = artifact_root(uri)
    if root:
        command += ["--default-artifact-root", root]
    print(f"MLflow UI on http://{args.host}:{args.port}  (store {uri})", flush=True)
    os.execv(command[0], command)
    return 0
