"""`flowmetal replay`: execute a run's code against its journal with no effects.

Every effect call is matched against the journal; nothing is performed and
nothing is written. Replay stops at the end of the journal (or at an entry
still open). With `current`, the files on disk are used instead of the pinned
code, to check in-flight runs before a code change.

- `replay_run`: one run of a database.
- `replay_in_flight`: every run that has not ended (pending, running, waiting),
  against the current files: the deploy gate (`replay --current --all`,
  `check --in-flight`).
- `replay_document`: the runs of a journal file (engine/journal_file.py), loaded
  into a scratch database (`replay --file`, and `flowmetal test` for the
  `*.journal.json` files under its paths).
"""

from dataclasses import dataclass

import starlark as sl

from flowmetal.clock import SYSTEM
from flowmetal.engine.gate import BuiltinError, Gate, Stop
from flowmetal.engine.runner import Hooks, error_text
from flowmetal.errors import LoadError, UserError
from flowmetal.model import Continue, EndOfJournal, Nondeterminism, Suspend
from flowmetal.lang.diagnostics import strip_prelude_frames
from flowmetal.lang.loader import Program
from flowmetal.lang.safe import guard
from flowmetal.lang.workspace import DiskSources, PinnedSources
import json


@dataclass
class ReplayReport:
    ok: bool
    text: str


class ReplayGate(Gate):
    def _next(self, name, args, eff=None):
        seq, rec = super()._next(name, args, eff)
        if "_new" in rec:
            self.stop = EndOfJournal(seq - 1)
            raise Stop("end of journal")
        if rec["status"] == "started":
            self.stop = EndOfJournal(seq)
            raise Stop("open entry")
        return seq, rec

    def log(self, text, stream="log"):
        pass

    def read_secret(self, name):
        """The secret when this process has it (replay then computes as the run did), else ***."""
        try:
            return super().read_secret(name)
        except BuiltinError:
            return "***"


IN_FLIGHT = ("pending", "running", "waiting")


def replay_in_flight(store, root=None):
    """[(run row, ReplayReport)] of every run in flight, replayed against the current files
    (under `root`, else the workspace root each run recorded)."""
    out = []
    for state in IN_FLIGHT:
        for row in store.list_runs(status=state, limit=10_000_000):
            row = dict(row)
            if root is not None:
                row["root_dir"] = str(root)
            out.append((row, replay_run(store, row, current=True)))
    return sorted(out, key=lambda item: item[0]["id"])


def replay_document(doc, root=None, current=False):
    """[(run id, ReplayReport)] of every run of a journal-file document, in file order.

    With `current`, each run is replayed against the files under `root` (the runs'
    file names are relative to it); else against the sources the file pinned."""
    import tempfile
    from pathlib import Path

    from flowmetal.engine.journal_file import import_tree
    from flowmetal.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory(prefix="flowmetal-replay-") as scratch:
        store = SqliteStore(Path(scratch) / "replay.db")
        try:
            import_tree(store, doc)
            out = []
            for item in doc["runs"]:
                row = dict(store.get_run(item["run"]["id"]))
                if current:
                    row["root_dir"] = str(root)
                out.append((row["id"], replay_run(store, row, current=current)))
            return out
        finally:
            store.close()


def replay_run(store, run, current=False):
    if current:
        if not run["root_dir"]:
            raise UserError(f"run {run['id']} does not record its workspace root; cannot replay against current files")
        sources = DiskSources(run["root_dir"])
        where = f"the current files under {run['root_dir']}"
    else:
        sources = PinnedSources(store.pinned_sources(run["id"]))
        where = "its pinned code"
    gate = ReplayGate(store, run, owner=None, clock=SYSTEM, hooks=Hooks(store, SYSTEM))
    total = len(gate.entries)
    program = Program(sources, effect=gate.effect, log=gate.log)
    try:
        module = program.load(run["file"])
        program.phase = "execution"
        posargs = gate.resolve_args(json.loads(run["posargs"])) if run.get("posargs") else []
        guard(module.call_with, sl.EvalOptions(max_callstack_size=500), run["function"],  # panics: UserError
              *posargs, **gate.resolve_args(json.loads(run["args"])))
    except LoadError as e:
        return ReplayReport(False, "the code does not load:\n" + "\n".join(d.render() for d in e.diagnostics))
    except (sl.StarlarkError, Stop) as e:
        stop = gate.stop
        if isinstance(stop, Nondeterminism):
            return ReplayReport(False, f"run {run['id']} DIVERGES when replayed against {where}:\n{stop.message}")
        if isinstance(stop, (EndOfJournal, Continue, Suspend)):
            return ReplayReport(True, f"run {run['id']}: replayed {gate.replayed} of {total} journal entries "
                                      f"against {where}; no divergence")
        replayed = error_text(strip_prelude_frames(str(e), program._read))
        recorded = (run["error"] or "").split("\n", 1)[0]
        if run["state"] == "failed" and replayed.split("\n", 1)[0] == recorded:
            return ReplayReport(True, f"run {run['id']}: replayed {gate.replayed} of {total} journal entries "
                                      f"against {where} to the same failure ({recorded}); no divergence")
        return ReplayReport(False, f"run {run['id']} fails when replayed against {where}:\n" + replayed)
    if gate.seq < total:
        return ReplayReport(False, f"run {run['id']} DIVERGES when replayed against {where}: the program returned "
                                   f"after {gate.seq} effects, but the journal records {total}")
    return ReplayReport(True, f"run {run['id']}: replayed {gate.replayed} of {total} journal entries against "
                              f"{where}; no divergence")
