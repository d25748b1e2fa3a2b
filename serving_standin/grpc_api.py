"""gRPC on `--port` (8500): PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus, HandleReloadConfigRequest), with the protos of tensorflow-serving-api.

Errors are gRPC status codes carrying the same messages as REST (ToGRPCStatus: at most 1024
characters, then "...TRUNCATED"). Classify, Regress and MultiInference answer UNIMPLEMENTED.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving_standin import protos
from serving_standin.core import ServingCore
from serving_standin.models import ServingError, log, status_code

T = TypeVar("T")
_MESSAGE_LIMIT = 1024
MAX_MESSAGE = 2**31 - 1  # SetMaxMessageSize(INT32_MAX), as the real server


def _spec(model_spec: Any) -> tuple[str, int | None, str | None]:
    """(name, version, label) of a ModelSpec; a missing name is INVALID_ARGUMENT."""
    if not model_spec.name:
        raise ServingError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
    choice = model_spec.WhichOneof("version_choice")
    version = model_spec.version.value if choice == "version" else None
    label = model_spec.version_label if choice == "version_label" else None
    return model_spec.name, version, label


def _answer(context: grpc.ServicerContext, call: Callable[[], T]) -> T:
    """Run `call`; a ServingError or TensorFlow error aborts the RPC with its code and message."""
    try:
        return call()
    except Exception as err:
        code = status_code(err)
        message = getattr(err, "message", None) or str(err)
        if len(message) > _MESSAGE_LIMIT:
            message = message[:_MESSAGE_LIMIT] + "...TRUNCATED"
        context.abort(getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN), message)
        raise  # abort() raises; this line is for type checkers


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over the ServingCore."""

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    def Predict(self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext) -> Any:
        def run() -> predict_pb2.PredictResponse:
            name, version, label = _spec(request.model_spec)
            return protos.predict(name, self.core.resolve(name, version, label), request)

        return _answer(context, run)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        def run() -> get_model_metadata_pb2.GetModelMetadataResponse:
            if not request.HasField("model_spec"):
                raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
            protos.check_metadata_request(request)
            name, version, label = _spec(request.model_spec)
            return protos.metadata(name, self.core.resolve(name, version, label))

        return _answer(context, run)

    def _unimplemented(self, what: str, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not served by the stand-in")

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented("Classify", context)

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented("Regress", context)

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._unimplemented("MultiInference", context)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest over the ServingCore."""

    def __init__(self, core: ServingCore) -> None:
        self.core = core

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        def run() -> get_model_status_pb2.GetModelStatusResponse:
            if not request.HasField("model_spec"):
                raise ServingError("INVALID_ARGUMENT", "Missing ModelSpec")
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            return protos.status(self.core.statuses(spec.name, version))

        return _answer(context, run)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        def run() -> model_management_pb2.ReloadConfigResponse:
            config = request.config
            if config.WhichOneof("config") != "model_config_list":
                raise ServingError(
                    "INVALID_ARGUMENT",
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported",
                )
            for index, entry in enumerate(config.model_config_list.config):
                log(
                    f"Config entry index : {index} path : {entry.base_path} name : {entry.name} "
                    f"platform : {entry.model_platform}"
                )
            try:
                self.core.reload_config_text(text_format.MessageToString(config))
            except ServingError as err:
                log(f"ERROR: ReloadConfig failed: {err.message}")
                raise
            return model_management_pb2.ReloadConfigResponse()  # status OK: error_code 0

        return _answer(context, run)


def start_grpc_server(core: ServingCore, port: int, max_threads: int) -> grpc.Server:
    """Both services on 0.0.0.0:`port`, a pool of `max_threads` workers (--grpc_max_threads)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max(1, max_threads), thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core), server)
    if server.add_insecure_port(f"0.0.0.0:{port}") == 0:
        raise ServingError("UNAVAILABLE", f"cannot listen for gRPC on port {port}")
    server.start()
    log(f"Running gRPC ModelServer at 0.0.0.0:{port} ...")
    return server
