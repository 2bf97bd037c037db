"""taquba-workflow: durable multi-step runs with per-step memoization on a taquba queue.

A run is a sequence of steps; each step is a job on a taquba queue, and the step runner returns
what happens next (`Continue`, `Succeed`, `Fail`, `Cancel`). The decision commits atomically
with the step's acknowledgement, so a step's successor exists if and only if the step settled.
Steps are delivered at least once: memoize their expensive side effects with `Step.memo`.
Payloads are typed (anything `taquba.Codec` supports, or raw ``bytes``). Everything is
trio-native.

    async def run_step(step: Step[str]) -> StepOutcome[str, str]:
        if step.number == 0:
            return Continue(step.payload.upper())
        return Succeed(step.payload + "!")

    async with taquba.open_queue("./data") as queue:
        runtime = Runtime(queue, run_step)
        async with trio.open_nursery() as nursery:
            await nursery.start(runtime.serve)
            handle = await runtime.submit(RunSpec(input="hello", run_id="greeting"))
            outcome = await handle.wait()
            runtime.shutdown()
"""

from importlib.metadata import version as _version

from taquba import fixup_module_metadata as _taquba_fixup

from ._effects import TerminalEffects as TerminalEffects
from ._errors import ConflictingKvEffect as ConflictingKvEffect
from ._errors import EffectsSealed as EffectsSealed
from ._errors import InputMismatch as InputMismatch
from ._errors import InvalidRunId as InvalidRunId
from ._errors import PermanentStepError as PermanentStepError
from ._errors import ReservedHeader as ReservedHeader
from ._errors import ReservedKvKey as ReservedKvKey
from ._errors import RunNotRetryable as RunNotRetryable
from ._errors import StepError as StepError
from ._errors import TransientStepError as TransientStepError
from ._errors import UnserializableInput as UnserializableInput
from ._errors import WorkflowDataError as WorkflowDataError
from ._errors import WorkflowError as WorkflowError
from ._keys import DEFAULT_MEMO_PREFIX as DEFAULT_MEMO_PREFIX
from ._keys import HEADER_CONTROL as HEADER_CONTROL
from ._keys import HEADER_RUN_ID as HEADER_RUN_ID
from ._keys import HEADER_SIGNAL_WAIT as HEADER_SIGNAL_WAIT
from ._keys import HEADER_STEP as HEADER_STEP
from ._keys import HEADER_TERMINAL as HEADER_TERMINAL
from ._keys import MAX_RUN_ID_LENGTH as MAX_RUN_ID_LENGTH
from ._keys import RESERVED_HEADER_PREFIX as RESERVED_HEADER_PREFIX
from ._keys import RESERVED_KV_PREFIX as RESERVED_KV_PREFIX
from ._keys import remaining_delay as remaining_delay
from ._memo import Memo as Memo
from ._memo import MemoStore as MemoStore
from ._memo import TerminalMarker as TerminalMarker
from ._memo import content_key as content_key
from ._operate import RunPage as RunPage
from ._operate import RunSummary as RunSummary
from ._operate import cancel_run as cancel_run
from ._operate import get_run as get_run
from ._operate import list_memos as list_memos
from ._operate import list_runs as list_runs
from ._runtime import Hook as Hook
from ._runtime import HookFunction as HookFunction
from ._runtime import RunHandle as RunHandle
from ._runtime import Runner as Runner
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeStatistics as RuntimeStatistics
from ._runtime import StepFunction as StepFunction
from ._runtime import StepRunner as StepRunner
from ._runtime import SweepReport as SweepReport
from ._runtime import TerminalHook as TerminalHook
from ._runtime import read_run_outcome as read_run_outcome
from ._types import MAX_SIGNAL_KEY_LENGTH as MAX_SIGNAL_KEY_LENGTH
from ._types import Cancel as Cancel
from ._types import Continue as Continue
from ._types import Fail as Fail
from ._types import RunOutcome as RunOutcome
from ._types import RunSpec as RunSpec
from ._types import RunState as RunState
from ._types import RunStatus as RunStatus
from ._types import SignalOutcome as SignalOutcome
from ._types import Step as Step
from ._types import StepOutcome as StepOutcome
from ._types import Succeed as Succeed
from ._types import TerminalStatus as TerminalStatus

__version__: str = _version("taquba-workflow")
"""The installed version of the `taquba-workflow` distribution."""

# Listed so documentation tools (griffe/mkdocstrings) render the re-exported names here.
__all__ = [  # noqa: RUF022 - grouped by topic, not sorted
    # the runtime
    "Runtime",
    "Runner",
    "StepFunction",
    "StepRunner",
    "Hook",
    "HookFunction",
    "TerminalHook",
    "TerminalEffects",
    "RuntimeStatistics",
    "SweepReport",
    "read_run_outcome",
    # operating runs without a runtime
    "list_runs",
    "get_run",
    "RunPage",
    "RunSummary",
    "cancel_run",
    "list_memos",
    # runs and steps
    "RunSpec",
    "RunHandle",
    "Step",
    "StepOutcome",
    "Continue",
    "Succeed",
    "Fail",
    "Cancel",
    "RunState",
    "RunStatus",
    "RunOutcome",
    "TerminalStatus",
    # memos and retention
    "Memo",
    "MemoStore",
    "TerminalMarker",
    "content_key",
    "remaining_delay",
    # errors
    "WorkflowError",
    "InvalidRunId",
    "ReservedHeader",
    "ReservedKvKey",
    "ConflictingKvEffect",
    "EffectsSealed",
    "UnserializableInput",
    "InputMismatch",
    "RunNotRetryable",
    "WorkflowDataError",
    "StepError",
    "TransientStepError",
    "PermanentStepError",
    # constants
    "DEFAULT_MEMO_PREFIX",
    "HEADER_CONTROL",
    "HEADER_RUN_ID",
    "HEADER_STEP",
    "HEADER_TERMINAL",
    "MAX_RUN_ID_LENGTH",
    "RESERVED_HEADER_PREFIX",
    "RESERVED_KV_PREFIX",
    "__version__",
    # durable signals
    "SignalOutcome",
    "MAX_SIGNAL_KEY_LENGTH",
    "HEADER_SIGNAL_WAIT",
]

_taquba_fixup(__name__, globals())
