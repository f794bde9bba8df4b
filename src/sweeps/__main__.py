"""`python -m sweeps <command> [args]`: the subcommand comes off argv before Hydra sees the rest."""

from __future__ import annotations

import sys

USAGE = """usage: python -m sweeps <command> [args]

commands:
  train [overrides]     one fine-tuning run (Hydra overrides: model=gpt2 lr=2e-5 ...);
                        -m for a multirun or Optuna sweep (sweep=imdb_tpe); --cfg job, --info, --help
  compare [--sweep N]   table of a sweep's trials (--format table|csv|json)
  ui [--port P]         MLflow UI on the project's tracking store
  promote               register the best trial of the last sweep; move the `champion` alias if it wins
  deploy [run|test|delete|cancel]
                        deploy the champion to the `deploy` target (azure_openai, local), test or remove it
  databricks check|cleanup
                        validate workspace auth, spark version and node type; cancel a sweep's runs

examples:
  python -m sweeps train model=gpt2 lr=2e-5
  python -m sweeps train experiment=offline
  python -m sweeps train -m lr=1e-5,2e-5,5e-5 batch_size=8,16
  python -m sweeps train -m sweep=imdb_tpe hydra.sweeper.workers=2
"""

# command -> module whose main(argv) -> int runs it
# As a shell reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130
COMMANDS = {
    "compare": "sweeps.compare",
    "ui": "sweeps.ui",
    "promote": "sweeps.promote",
    "deploy": "sweeps.deploy",
    "databricks": "sweeps.databricks",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "train":
        return _train(rest)
    if command not in COMMANDS:
        names = ", ".join(["train", *COMMANDS])
        print(f"error: unknown command '{command}'; choose one of {names} (python -m sweeps --help)", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[command]).main(rest)


def _train(rest: list[str]) -> int:
    """Run the Hydra app with the remaining argv; a failure before any task started is bad input (exit 2)."""
    from sweeps import errors
    from sweeps.app import train_app

    sys.argv = [f"{sys.argv[0]} train", *rest]
    try:
        train_app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if code == 1 and not errors.started():
            return errors.EXIT_BAD_INPUT
        return code
    except ValueError as exc:  # Hydra's own argument checks (e.g. --cfg with -m) raise before any task
        if errors.started():
            raise
        print(f"error: {exc} (python -m sweeps train --help)", file=sys.stderr)
        return errors.EXIT_BAD_INPUT
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run has ended itself (MLflow status KILLED)
        print("interrupted: the run stopped (an MLflow run it had started is marked KILLED)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
