"""The race explorer: interleave threads, find, replay and shrink counterexamples.

Independent of the kernel model: programs are state machines or generators speaking
the vocabulary of :mod:`pinlab.interleave`.  Verdicts assume sequential consistency.
"""

from pinlab.explore.canon import Unfreezable
from pinlab.explore.fingerprint import fingerprint
from pinlab.explore.options import Options
from pinlab.explore.program import (
    FinalCheck,
    GenThread,
    Invariant,
    Machine,
    MachineProgram,
    Program,
    Transition,
    WorldProgram,
    program_id,
)
from pinlab.explore.replay import Replay, replay, run_moves
from pinlab.explore.result import Counterexample, ErrorReport, Result, UnmodelledPath, exit_code
from pinlab.explore.run import explore
from pinlab.explore.schedule import ScheduleError, decode, encode
from pinlab.explore.shrink import shrink

__all__ = [
    "Counterexample",
    "ErrorReport",
    "FinalCheck",
    "GenThread",
    "Invariant",
    "Machine",
    "MachineProgram",
    "Options",
    "Program",
    "Replay",
    "Result",
    "ScheduleError",
    "Transition",
    "Unfreezable",
    "UnmodelledPath",
    "WorldProgram",
    "decode",
    "encode",
    "exit_code",
    "explore",
    "fingerprint",
    "program_id",
    "replay",
    "run_moves",
    "shrink",
]
