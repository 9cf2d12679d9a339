"""One exception root for everything Flowmetal raises on purpose.

A `UserError` is a mistake a person can fix (bad file, bad argument, bad cron);
the CLI renders it without a traceback and exits 2.
"""


class FlowmetalError(Exception):
    """Root of every error Flowmetal raises deliberately."""


class UserError(FlowmetalError):
    """A mistake in input the user controls. Rendered as text, exit code 2."""


class LoadError(UserError):
    """A `.star` file failed to load. `diagnostics` holds every problem found."""

    def __init__(self, message, diagnostics=()):
        super().__init__(message)
        self.diagnostics = list(diagnostics)


class BuiltinError(UserError):
    """A builtin was called with a bad argument, or its outcome fails the run (check = True);
    the message names the builtin (and the argument)."""


class StoreError(FlowmetalError):
    """The database cannot be opened or used (missing, locked, corrupt)."""


class NotFound(UserError):
    """A run, schedule or file named by the user does not exist."""


class EffectError(FlowmetalError):
    """An effect failed in a way that is recorded in the journal as an error."""


class NondeterminismError(FlowmetalError):
    """Replay saw a different call than the journal records at a position."""

    def __init__(self, run_id, seq, recorded, actual):
        self.run_id, self.seq, self.recorded, self.actual = run_id, seq, recorded, actual
        super().__init__(
            f"nondeterminism in run {run_id} at journal position {seq}: "
            f"recorded {recorded}, but the program called {actual}"
        )
