"""The protobuf side of serving: PredictRequest -> PredictResponse, metadata and status messages.

Used by the gRPC services and by the warmup replay (a warmup record is a PredictRequest). The
checks and their messages follow predict_util.cc and get_model_metadata_impl.cc of TF Serving 2.20.
Imported only where gRPC or warmup is used: it needs TensorFlow and tensorflow-serving-api.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.core.protobuf import error_codes_pb2, meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from serving_standin.models import Servable, ServingError
from serving_standin.tensors import DEFAULT_SIGNATURE

SIGNATURE_DEF_FIELD = "signature_def"
# AsProtoField: the typed repeated field each dtype is written to (what TF Serving's Predict sends back).
_PROTO_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def as_proto_field(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto with the values in its typed field (not tensor_content), as TF Serving answers."""
    dtype = tf.as_dtype(array.dtype).as_datatype_enum
    field = _PROTO_FIELDS.get(dtype)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[{"size": d} for d in array.shape]),
    )
    getattr(proto, field).extend(array.ravel().tolist())
    return proto


def _input_specs(function: Any) -> dict[str, Any]:
    return dict(function.structured_input_signature[1])


def _inputs(specs: dict[str, Any], request: predict_pb2.PredictRequest) -> dict[str, Any]:
    sent, wanted = set(request.inputs), set(specs)
    if sent != wanted:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) "
            f"!= len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.",
        )
    tensors = {}
    for index, name in enumerate(sorted(specs)):
        try:
            array = tf.make_ndarray(request.inputs[name])
        except (TypeError, ValueError) as err:
            raise ServingError("INVALID_ARGUMENT", f"input {name!r}: {err}") from None
        expected = specs[name].dtype
        if tf.as_dtype(array.dtype) != expected:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"Expects arg[{index}] to be {expected.name} but {tf.as_dtype(array.dtype).name} is provided",
            )
        tensors[name] = tf.constant(array, dtype=expected)
    return tensors


def predict(model: str, servable: Servable, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    """Run one PredictRequest on a loaded servable (also during its warmup, before it is AVAILABLE)."""
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    function = servable.signatures.get(signature_name)
    if function is None:
        raise ServingError("FAILED_PRECONDITION", f'Serving signature key "{signature_name}" not found.')
    outputs = function(**_inputs(_input_specs(function), request))
    wanted = list(request.output_filter) or sorted(outputs)
    for alias in wanted:
        if alias not in outputs:
            raise ServingError(
                "INVALID_ARGUMENT",
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{','.join(sorted(outputs))}}}.",
            )
    if len(set(wanted)) != len(wanted):
        raise ServingError("INVALID_ARGUMENT", f"duplicate output tensor alias: {wanted}")
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for alias in wanted:
        response.outputs[alias].CopyFrom(as_proto_field(outputs[alias].numpy()))
    return response


def check_metadata_request(request: get_model_metadata_pb2.GetModelMetadataRequest) -> None:
    """ValidateGetModelMetadataRequest: at least one field, and only signature_def."""
    if not request.metadata_field:
        raise ServingError("INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field")
    for name in request.metadata_field:
        if name != SIGNATURE_DEF_FIELD:
            raise ServingError("INVALID_ARGUMENT", f"Metadata field {name} is not supported")


def metadata(model: str, servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """model_spec plus the SignatureDefMap of the loaded meta graph, packed in an Any."""
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(
            signature_def if isinstance(signature_def, meta_graph_pb2.SignatureDef) else meta_graph_pb2.SignatureDef()
        )
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
    return response


def status(entries: list[dict[str, Any]]) -> get_model_status_pb2.GetModelStatusResponse:
    """The REST status entries as a GetModelStatusResponse (state and error code as enums)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for entry in entries:
        version_status = response.model_version_status.add()
        version_status.version = int(entry["version"])
        version_status.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry["state"])
        version_status.status.error_code = error_codes_pb2.Code.Value(entry["status"]["error_code"])
        version_status.status.error_message = entry["status"]["error_message"]
    return response
