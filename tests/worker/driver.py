"""Runs the app in the real Azure Functions Python worker, as the host drives it, without the host.

Run by `.venv-worker/bin/python` (tests/worker/test_worker.py): the worker's library half,
`azure-functions-runtime` (pinned in the Makefile: these are private APIs), receives the same
protobuf messages the .NET host sends over gRPC, in the host's order: WorkerInitRequest (the worker
indexes the app: `load_binding_registry()`, then `index_functions`), FunctionsMetadataRequest,
one FunctionLoadRequest per function, then InvocationRequests. Each message crosses the wire
format (serialized and parsed again) as gRPC would carry it.

stdin: {"app": folder, "preload": [module, ...],
        "invocations": [{"function": name, "request": InvocationRequest in protobuf's JSON form}]}
stdout: {"init": WorkerInitResponse, "metadata": [RpcFunctionMetadata], "loads": [...],
         "invocations": [{"function": name, "response": InvocationResponse, "logs": [...]}]}
(all in protobuf's JSON form, field names as in the .proto). Nothing of the app is replaced.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass
class WorkerRequest:
    """What the proxy worker hands the library worker: the host's message and, on init, the
    generated protobuf module and the host's address."""

    name: str
    request: Any
    properties: dict[str, Any] | None = None


class Captured(logging.Handler):
    """The worker forwards every log record to the host as an RpcLog; this keeps them instead."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(
            {"logger": record.name, "level": record.levelname, "message": record.getMessage()}
        )


def functions_rpc() -> ModuleType:
    """The generated FunctionRpc messages (the host-worker contract). The proxy worker that holds
    them in Azure is not on PyPI; azure-functions-runtime-v1's wheel ships Microsoft's own build of
    them (tests/protos), loaded here under a name of its own so that no `tests` package clashes."""
    init = Path(
        str(
            metadata.distribution("azure-functions-runtime-v1").locate_file(
                "tests/protos/__init__.py"
            )
        )
    )
    spec = importlib.util.spec_from_file_location(
        "functions_rpc", init, submodule_search_locations=[str(init.parent)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["functions_rpc"] = module
    spec.loader.exec_module(module)
    return module


async def drive(job: dict[str, Any]) -> dict[str, Any]:
    from google.protobuf import json_format

    protos = functions_rpc()
    app = str(Path(job["app"]).resolve())
    os.chdir(app)  # as the host starts the worker: in the app's folder, which is on sys.path
    sys.path.insert(0, app)
    for name in job.get("preload", []):
        importlib.import_module(name)

    import azure_functions_runtime as worker

    def wire(**content: Any) -> Any:
        message = protos.StreamingMessage(request_id=str(uuid.uuid4()), **content)
        return protos.StreamingMessage.FromString(message.SerializeToString())

    def as_json(message: Any) -> dict[str, Any]:
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )

    captured = Captured()
    root = logging.getLogger()
    root.addHandler(captured)
    root.setLevel(logging.INFO)  # the proxy worker's level unless debug logging is asked for

    worker.start_threadpool_executor()
    try:
        init = await worker.worker_init_request(
            WorkerRequest(
                "WorkerInitRequest",
                wire(
                    worker_init_request=protos.WorkerInitRequest(
                        host_version="4.0.0", function_app_directory=app, worker_directory=app
                    )
                ),
                {"protos": protos, "host": "127.0.0.1"},
            )
        )
        found = await worker.functions_metadata_request(
            WorkerRequest(
                "WorkerMetadataRequest",
                wire(
                    functions_metadata_request=protos.FunctionsMetadataRequest(
                        function_app_directory=app
                    )
                ),
            )
        )
        ids = {meta.name: meta.function_id for meta in found.function_metadata_results}
        loads = []
        for meta in found.function_metadata_results:
            loaded = await worker.function_load_request(
                WorkerRequest(
                    "FunctionLoadRequest",
                    wire(
                        function_load_request=protos.FunctionLoadRequest(
                            function_id=meta.function_id, metadata=meta
                        )
                    ),
                )
            )
            loads.append(as_json(loaded))
        invocations = []
        for invocation in job.get("invocations", []):
            request = json_format.ParseDict(invocation["request"], protos.InvocationRequest())
            request.function_id = ids[invocation["function"]]
            request.invocation_id = request.invocation_id or str(uuid.uuid4())
            captured.records = []
            response = await worker.invocation_request(
                WorkerRequest("FunctionInvocationRequest", wire(invocation_request=request))
            )
            invocations.append(
                {
                    "function": invocation["function"],
                    "response": as_json(response),
                    "logs": captured.records,
                }
            )
    finally:
        worker.stop_threadpool_executor()
        root.removeHandler(captured)
    return {
        "init": as_json(init),
        "metadata": [as_json(meta) for meta in found.function_metadata_results],
        "loads": loads,
        "invocations": invocations,
    }


def main() -> None:
    job = json.load(sys.stdin)
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever the app or the worker prints stays out of the answer
    result = asyncio.run(drive(job))
    out.write(json.dumps(result))
    out.flush()


if __name__ == "__main__":
    main()
