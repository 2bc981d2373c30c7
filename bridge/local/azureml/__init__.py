"""A loopback Azure ML workspace for the local stack: the ARM jobs API as azure-ai-ml calls it
(`workspace`), command jobs run as local processes, and the job events Azure ML raises, shaped by a
profile (`profiles`) and published through a local Event Grid topic (`publisher`)."""

from bridge.local.azureml.profiles import DOCUMENTED, LOSSY, OBSERVED, PROFILES, Profile
from bridge.local.azureml.workspace import AzureMLEmulator, EmulatedJob, RecordedRequest

__all__ = [
    "DOCUMENTED",
    "LOSSY",
    "OBSERVED",
    "PROFILES",
    "AzureMLEmulator",
    "EmulatedJob",
    "Profile",
    "RecordedRequest",
]
