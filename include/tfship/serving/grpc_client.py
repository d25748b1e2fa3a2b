"""A gRPC client for one model on one TF Serving (`host:8500`), shaped like the REST ServingClient.

Each call answers `(code, body)` as the REST client does: `code` is the HTTP status TF Serving's
REST API gives for the same outcome (OK 200, NOT_FOUND 404, INVALID_ARGUMENT 400, ...) and `body`
is the REST JSON shape (`model_version_status`, `predictions`, `metadata`, or `{"error": ...}`),
so the status decoding and the canary checks work on either protocol. grpc, TensorFlow and
tensorflow_serving are imported on first use (nothing heavy at import time).
"""

from __future__ import annotations

from typing import Any

from tfship.errors import TfshipError
from tfship.paths import check_name

# TF Serving's REST status map (http_server.cc ToHTTPStatusCode), keyed by gRPC status code name.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}
DEFAULT_SIGNATURE = "serving_default"


class GrpcServingError(TfshipError):
    """A gRPC call failed in a way that has no REST-shaped answer (a malformed signature)."""


class GrpcServingClient:
    """PredictionService and ModelService calls for one model on one TF Serving."""

    def __init__(self, target: str, model: str, *, timeout_s: float = 30.0, channel: Any = None) -> None:
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        check_name("model", model)
        self.target = target
        self.model = model
        self.timeout_s = timeout_s
        self.channel = channel or grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 2**31 - 1)]
        )
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._signatures: dict[tuple[int | None, str | None], dict[str, Any]] = {}

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def _spec(self, spec: Any, version: int | None, label: str | None, signature_name: str | None = None) -> None:
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        spec.name = self.model
        if version is not None:
            spec.version.value = int(version)
        if label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name

    def _call(self, method: Any, request: Any) -> tuple[int, Any]:
        """(200, response) or (HTTP-equivalent code, {"error": details, "grpc_code": name})."""
        import grpc

        try:
            return 200, method(request, timeout=self.timeout_s)
        except grpc.RpcError as err:
            name = err.code().name if err.code() is not None else "UNKNOWN"
            return HTTP_STATUS.get(name, 500), {"error": err.details() or name, "grpc_code": name}

    def version_status(self, version: int | None = None) -> tuple[int, dict[str, Any]]:
        """GetModelStatus as the REST status body: `{"model_version_status": [...]}` (newest first)."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, version, None)
        code, response = self._call(self._models.GetModelStatus, request)
        if code != 200:
            return code, response
        states = get_model_status_pb2.ModelVersionStatus.State
        entries = []
        for entry in sorted(response.model_version_status, key=lambda e: -e.version):
            status = entry.status
            error = {"error_code": _error_code_name(status.error_code), "error_message": status.error_message}
            entries.append({"version": str(entry.version), "state": states.Name(entry.state), "status": error})
        return 200, {"model_version_status": entries}

    def metadata(self, *, version: int | None = None, label: str | None = None) -> tuple[int, dict[str, Any]]:
        """GetModelMetadata (signature_def) as the REST metadata body."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, version, label)
        code, response = self._call(self._prediction.GetModelMetadata, request)
        if code != 200:
            return code, response
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return 200, {
            "model_spec": {
                "name": response.model_spec.name,
                "signature_name": "",
                "version": str(response.model_spec.version.value),
            },
            "metadata": {"signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)},
        }

    def _inputs(self, version: int | None, label: str | None, signature_name: str) -> tuple[int, dict[str, Any]]:
        """(200, the signature's inputs by name) read once per version/label, or the metadata call's error."""
        key = (version, label)
        if key not in self._signatures:
            code, body = self.metadata(version=version, label=label)
            if code != 200:
                return code, body
            self._signatures[key] = body["metadata"]["signature_def"]["signature_def"]
        signature = self._signatures[key].get(signature_name)
        if signature is None:
            raise GrpcServingError(f"model {self.model!r} has no signature {signature_name!r}")
        return 200, signature["inputs"]

    def predict(
        self,
        instances: Any,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
    ) -> tuple[int, dict[str, Any]]:
        """Row-format predict over gRPC: `(200, {"predictions": [...]})` with plain lists, as REST answers."""
        from tensorflow_serving.apis import predict_pb2

        code, inputs = self._inputs(version, label, signature_name)
        if code != 200:  # the metadata call failed: the same code and message a predict would get
            return code, inputs
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, version, label, signature_name)
        if len(inputs) == 1:
            columns = {next(iter(inputs)): instances}
        else:  # several inputs: each instance is an object keyed by input name, as in REST
            columns = {name: [row[name] for row in instances] for name in inputs}
        for name, values in columns.items():
            request.inputs[name].CopyFrom(tensor_proto(values, inputs[name].get("dtype", "DT_FLOAT")))
        code, response = self._call(self._prediction.Predict, request)
        if code != 200:
            return code, response
        outputs = {alias: ndarray(proto).tolist() for alias, proto in response.outputs.items()}
        if len(outputs) == 1:
            return 200, {"predictions": next(iter(outputs.values()))}
        rows = len(next(iter(outputs.values())))
        return 200, {"predictions": [{alias: values[i] for alias, values in outputs.items()} for i in range(rows)]}

    def reload_config(self, config_text: str) -> tuple[int, dict[str, Any]]:
        """HandleReloadConfigRequest with ModelServerConfig text; (200, {}) once applied."""
        from google.protobuf import text_format
        from tensorflow_serving.apis import model_management_pb2
        from tensorflow_serving.config import model_server_config_pb2

        request = model_management_pb2.ReloadConfigRequest()
        request.config.CopyFrom(text_format.Parse(config_text, model_server_config_pb2.ModelServerConfig()))
        code, response = self._call(self._models.HandleReloadConfigRequest, request)
        return (code, {}) if code == 200 else (code, response)


# TensorProto <-> numpy without TensorFlow's runtime: the serving hosts' image carries only
# TensorFlow's proto modules. The dtypes a signature can declare, as numpy names.
_DTYPES = {
    "DT_FLOAT": "float32",
    "DT_DOUBLE": "float64",
    "DT_HALF": "float16",
    "DT_INT8": "int8",
    "DT_INT16": "int16",
    "DT_INT32": "int32",
    "DT_INT64": "int64",
    "DT_UINT8": "uint8",
    "DT_UINT16": "uint16",
    "DT_UINT32": "uint32",
    "DT_UINT64": "uint64",
    "DT_BOOL": "bool",
    "DT_STRING": "object",
}
# Where a TensorProto without tensor_content keeps its values (tensor.proto).
_VALUE_FIELDS = {
    "DT_FLOAT": "float_val",
    "DT_DOUBLE": "double_val",
    "DT_HALF": "half_val",  # the float16 bit patterns, as int32
    "DT_INT8": "int_val",
    "DT_INT16": "int_val",
    "DT_INT32": "int_val",
    "DT_UINT8": "int_val",
    "DT_UINT16": "int_val",
    "DT_INT64": "int64_val",
    "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
    "DT_BOOL": "bool_val",
    "DT_STRING": "string_val",
}


def _dtype(name: str) -> Any:
    import numpy as np

    if name not in _DTYPES:
        raise GrpcServingError(f"tensor dtype {name} is not supported by the gRPC client")
    return np.dtype(_DTYPES[name]).newbyteorder("<")  # tensor_content is little-endian


def tensor_proto(values: Any, dtype: str = "DT_FLOAT") -> Any:
    """A TensorProto of `values` as the signature's dtype (numbers packed into tensor_content)."""
    import numpy as np
    from tensorflow.core.framework import tensor_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DataType.Value(dtype))
    if dtype == "DT_STRING":
        array = np.asarray(values, dtype=object)
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1))
    else:
        array = np.asarray(values, dtype=_dtype(dtype))
        proto.tensor_content = array.tobytes()
    proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=size) for size in array.shape)
    return proto


def ndarray(proto: Any) -> Any:
    """The numpy array a TensorProto holds, from tensor_content or its typed value field."""
    import numpy as np
    from tensorflow.core.framework import types_pb2

    name = types_pb2.DataType.Name(proto.dtype)
    shape = [dim.size for dim in proto.tensor_shape.dim]
    dtype = _dtype(name)
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=dtype).reshape(shape)
    field = list(getattr(proto, _VALUE_FIELDS[name]))
    if name == "DT_HALF":
        values = np.array(field, dtype=np.uint16).view(np.float16)
    else:
        values = np.array(field, dtype=dtype)
    size = int(np.prod(shape))
    if 0 < values.size < size:  # fewer values than elements: the last one repeats
        values = np.concatenate([values, np.repeat(values[-1:], size - values.size)])
    return values.reshape(shape)


def _error_code_name(code: int) -> str:
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Name(code) if code in error_codes_pb2.Code.values() else str(code)
