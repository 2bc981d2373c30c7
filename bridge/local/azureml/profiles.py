"""Emulator profiles: the Azure ML that the documentation describes, the one public payloads show,
and one that loses events on the way.

Where Azure's documentation and its public evidence disagree, or the evidence is silent, the
emulator can behave each way, and the bridge must converge under all of them
(docs/azure-behaviour.md lists the sources):

- `documented`: RunStatusChanged on the way (Running, CancelRequested) and for every terminal status
  (the current schema page: "raised when a run status changes"), RunCompleted on success, tags
  under `runTags`, the documentation sample's `dataVersion` "". One resource write event per
  online endpoint or deployment write, when it ends, by outcome; ModelRegistered as the docs
  page shows it.
- `observed`: what payloads from Azure's own SDK test suites and a user's capture show. RunCompleted
  spells its tags `RunTags` and its time with `+00:00`; RunStatusChanged is seen only for
  NotStarted, Running and Failed, never for Completed or Canceled; a canceled job raises no event
  at all; 7-digit fractional seconds; `dataVersion` "2"; `runType` null.
  Online endpoint and deployment writes raise two ResourceWriteSuccess as they are accepted and
  nothing when they end; ModelRegistered comes in the SDK tests' camelCase.
- `lossy`: `documented`'s events, of which a seeded share is dropped, duplicated (same id, as an
  Event Grid redelivery) or held back so that later ones overtake it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bridge.local.event_grid import Loss

# What the emulator has always published: Running on the way, every terminal status at the end.
DOCUMENTED_STATUSES: frozenset[str] = frozenset(
    {"Running", "CancelRequested", "Completed", "Failed", "Canceled"}
)


@dataclass(frozen=True)
class Profile:
    name: str
    status_changed: frozenset[str]  # statuses that raise RunStatusChanged
    run_completed: bool = True  # RunCompleted on success
    run_completed_tags_key: str = "runTags"
    time_style: Literal["python", "azure"] = "python"  # azure: 7 fractional digits
    data_version: str = ""
    loss: Loss = field(default_factory=Loss)
    # A job's outputs in GET jobs/{name}. The REST spec's examples fill every `uri`; recordings
    # from real workspaces (azure-sdk-for-python, sdk/ml/azure-ai-ml/tests/recordings) leave it
    # null for an output declared without a path, even once the job completed, and add a
    # `default` output (the run's artifact folder) to command jobs. docs/azure-behaviour.md.
    output_uris: Literal["filled", "null"] = "filled"
    default_output: bool = False
    # Resource write events (`Microsoft.Resources.ResourceWrite*`) for an online endpoint's or
    # deployment's long-running write. No source says when ARM raises them: `completion` is one
    # per outcome when the write ends (Success, Failure, Cancel), `start` a Success as soon as
    # the write is accepted and none at its end. Several for one write share a correlationId (two
    # are reported for one template deployment: MicrosoftDocs/azure-docs#12166).
    arm_events: Literal["completion", "start", "none"] = "completion"
    arm_events_per_write: int = 1
    # ModelRegistered on every model version PUT: `docs` is the docs page's shape (PascalCase,
    # ModelVersion an integer), `sdk` the SDK test suites' (camelCase, the version a string).
    model_registered: Literal["docs", "sdk", "none"] = "docs"


DOCUMENTED = Profile("documented", status_changed=DOCUMENTED_STATUSES)
OBSERVED = Profile(
    "observed",
    status_changed=frozenset({"NotStarted", "Running", "Failed"}),
    run_completed_tags_key="RunTags",
    time_style="azure",
    data_version="2",
    output_uris="null",
    default_output=True,
    arm_events="start",
    arm_events_per_write=2,
    model_registered="sdk",
)
LOSSY = Profile(
    "lossy",
    status_changed=DOCUMENTED_STATUSES,
    loss=Loss(drop=0.25, duplicate=0.25, delay=0.25, max_delay=2.0, seed=20261126),
)
PROFILES = {profile.name: profile for profile in (DOCUMENTED, OBSERVED, LOSSY)}
