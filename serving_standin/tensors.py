"""Predict request decoding (row or columnar, b64, dtype checks), outputs as JSON, and metadata."""

from __future__ import annotations

import base64
from typing import Any

from serving_standin.models import Servable, ServingError

DEFAULT_SIGNATURE = "serving_default"
_DTYPE_NAMES = {
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "string": "DT_STRING",
    "bool": "DT_BOOL",
    "uint8": "DT_UINT8",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "float16": "DT_HALF",
}


def _signature(servable: Servable, name: str) -> Any:
    if name not in servable.signatures:
        raise ServingError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
    return servable.signatures[name]


def _input_specs(function: Any) -> dict[str, Any]:
    return dict(function.structured_input_signature[1])


def _decode_b64(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"])
        raise ServingError("INVALID_ARGUMENT", 'JSON object for a tensor value must be {"b64": ...}')
    if isinstance(value, list):
        return [_decode_b64(item) for item in value]
    return value


def _to_tensor(name: str, spec: Any, value: Any) -> Any:
    import numpy as np
    import tensorflow as tf

    if spec.dtype == tf.string:
        value = _decode_b64(value)
        try:
            return tf.constant(value, dtype=tf.string)
        except (ValueError, TypeError) as err:
            raise ServingError("INVALID_ARGUMENT", f"input {name!r}: {err}") from None
    if _has_object(value):
        raise ServingError("INVALID_ARGUMENT", f"input {name!r}: JSON objects (b64) are only for string inputs")
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nesting
        raise ServingError("INVALID_ARGUMENT", f"input {name!r} is ragged: {err}") from None
    if array.dtype == object:
        raise ServingError("INVALID_ARGUMENT", f"input {name!r} is ragged or mixes types")
    if array.dtype.kind in "US" or (array.dtype.kind == "b" and spec.dtype != tf.bool):
        raise ServingError(
            "INVALID_ARGUMENT", f"input {name!r} has {array.dtype.kind!r} values, expected {spec.dtype.name}"
        )
    if array.dtype.kind == "f" and spec.dtype.is_integer:
        raise ServingError("INVALID_ARGUMENT", f"input {name!r}: float values for an {spec.dtype.name} tensor")
    return tf.constant(array.astype(spec.dtype.as_numpy_dtype))


def _has_object(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    if isinstance(value, list):
        return any(_has_object(item) for item in value[:1])
    return False


def _row_inputs(specs: dict[str, Any], instances: Any) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise ServingError("INVALID_ARGUMENT", "'instances' must be a non-empty JSON list")
    keyed = all(isinstance(row, dict) and not set(row) <= {"b64"} for row in instances)
    if keyed:
        names = set(instances[0])
        if any(set(row) != names for row in instances):
            raise ServingError("INVALID_ARGUMENT", "every object in 'instances' must have the same keys")
        columns = {name: [row[name] for row in instances] for name in names}
    elif len(specs) == 1:
        columns = {next(iter(specs)): instances}
    else:
        raise ServingError(
            "INVALID_ARGUMENT", f"the signature has {len(specs)} inputs: each instance must be an object keyed by name"
        )
    return columns


def _columnar_inputs(specs: dict[str, Any], inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, dict) and not set(inputs) <= {"b64"}:
        return inputs
    if len(specs) != 1:
        raise ServingError("INVALID_ARGUMENT", f"the signature has {len(specs)} inputs: 'inputs' must be an object")
    return {next(iter(specs)): inputs}


def predict(servable: Servable, body: dict[str, Any]) -> dict[str, Any]:
    """Row (`instances` -> `predictions`) or columnar (`inputs` -> `outputs`) predict."""
    function = _signature(servable, body.get("signature_name") or DEFAULT_SIGNATURE)
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows and has_columns:
        raise ServingError("INVALID_ARGUMENT", "Not both of 'instances' or 'inputs' can be specified")
    if not has_rows and not has_columns:
        raise ServingError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")
    specs = _input_specs(function)
    columns = _row_inputs(specs, body["instances"]) if has_rows else _columnar_inputs(specs, body["inputs"])
    unknown = set(columns) - set(specs)
    if unknown:
        raise ServingError("INVALID_ARGUMENT", f"input(s) {sorted(unknown)} are not in the signature {sorted(specs)}")
    missing = set(specs) - set(columns)
    if missing:
        raise ServingError("INVALID_ARGUMENT", f"missing input(s) {sorted(missing)}")
    tensors = {name: _to_tensor(name, specs[name], value) for name, value in columns.items()}
    outputs = {name: _jsonable(tensor.numpy()) for name, tensor in function(**tensors).items()}
    if has_columns:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{name: values[i] for name, values in outputs.items()} for i in range(rows)]}


def _jsonable(array: Any) -> Any:
    if array.dtype.kind in "SO":
        return [value.decode("utf-8", "replace") if isinstance(value, bytes) else value for value in array.tolist()]
    return array.tolist()


def _tensor_info(name: str, spec: Any, tensor_name: str) -> dict[str, Any]:
    dims = [] if spec.shape.rank is None else [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape]
    return {
        "dtype": _DTYPE_NAMES.get(spec.dtype.name, f"DT_{spec.dtype.name.upper()}"),
        "tensor_shape": {"dim": dims, "unknown_rank": spec.shape.rank is None},
        "name": tensor_name,
    }


def metadata(model: str, servable: Servable) -> dict[str, Any]:
    """The `/metadata` answer: model_spec and every signature's inputs and outputs."""
    signature_defs = {}
    for signature_name, function in servable.signatures.items():
        inputs = {
            name: _tensor_info(name, spec, f"{signature_name}_{name}:0")
            for name, spec in _input_specs(function).items()
        }
        outputs = {
            name: _tensor_info(name, spec, f"StatefulPartitionedCall:{index}")
            for index, (name, spec) in enumerate(sorted(function.structured_outputs.items()))
        }
        signature_defs[signature_name] = {
            "inputs": inputs,
            "outputs": outputs,
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": {"signature_def": signature_defs}},
    }
