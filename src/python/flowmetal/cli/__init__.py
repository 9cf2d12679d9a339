"""The command line: parse arguments, call one library function, render the result.

Errors a user can cause are shown as text (never a traceback) with exit code 2.
Exit codes: 0 success, 1 the run failed (or was cancelled or timed out),
2 usage, load or validation error, 130 interrupted.

One module per group of commands, each registering its commands on `cli`
(app.py) when imported below:

- app.py: the group, exit codes, errors, the database options and strict JSON
- execute.py: run, start, resume (starting runs, executing them in the foreground)
- runs.py: runs, show, logs, signal, cancel, replay (recorded runs)
- fork.py: fork, retry (a new run from a prefix of another's journal)
- worker.py: worker
- maintenance.py: check, prune
- schedule.py: schedule, import-crontab
- render.py: all output formatting (the only module that imports rich)
"""

from flowmetal.cli.app import (  # noqa: F401  the names command modules import from flowmetal.cli
    EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError, Group, InternalError, NoDatabase, cli, db_location,
    db_option, loads_json, main, open_db,
)
from flowmetal.cli.execute import parse_args  # noqa: F401

# Importing a command module registers its commands.
from flowmetal.cli import execute, maintenance, runs, worker  # noqa: F401,E402
from flowmetal.cli import schedule as _schedule  # noqa: F401,E402  registers schedule and import-crontab
from flowmetal.cli import serve as _serve, token as _token  # noqa: F401,E402  registers serve and token
from flowmetal.cli import testing as _testing  # noqa: F401,E402  registers test
from flowmetal.cli import fork as _fork  # noqa: F401,E402  registers fork and retry
