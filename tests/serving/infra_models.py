"""Candidates that must not reach a host, made like the good one in tests/serving/models.py.

- wrong_signature: the input is `pixels`, a flat (-1, 784) vector, not `input_image` (-1, 28, 28, 1);
- no_variables: the variables directory is gone (a partial copy);
- logits: the right signature, but raw scores instead of probabilities (no softmax).
Each gets a canary.json made from its own outputs, as training writes it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from tests.serving.models import CLASSES, IMAGE_SIDE, _band_weights, export_model, synthetic_images

BAD_KINDS = ("wrong_signature", "no_variables", "logits")


def export_candidate(directory: Path, kind: str, *, canary_rows: int = 64, seed: int = 7) -> Path:
    """A version directory with canary.json; kind: good, constant, no_variables, wrong_signature or logits."""
    if kind in ("good", "constant", "no_variables"):
        return export_model(directory, kind, canary_rows=canary_rows, seed=seed)
    import tensorflow as tf

    weights = _band_weights()
    flat = kind == "wrong_signature"
    spec = (
        tf.TensorSpec([None, IMAGE_SIDE * IMAGE_SIDE], tf.float32, name="pixels")
        if flat
        else tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE, 1], tf.float32, name="input_image")
    )

    class Variant(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(weights)

        @tf.function(input_signature=[spec])
        def serve(self, tensor: tf.Tensor) -> dict[str, tf.Tensor]:
            scores = tf.matmul(tf.reshape(tensor, [-1, IMAGE_SIDE * IMAGE_SIDE]) / 255.0, self.weights) * 40.0
            return {"probabilities": tf.nn.softmax(scores) if flat else scores}

    module = Variant()
    directory.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    images, labels = synthetic_images(canary_rows, seed)
    inputs = images.reshape(canary_rows, -1) if flat else images
    offline = module.serve(tf.constant(inputs, tf.float32))["probabilities"].numpy()
    canary = {
        "signature_name": "serving_default",
        "input_name": "pixels" if flat else "input_image",
        "ids": list(range(canary_rows)),
        "labels": labels.tolist(),
        "instances": inputs.astype(int).tolist(),
        "probabilities": offline.astype(float).tolist(),
    }
    (directory / "canary.json").write_text(json.dumps(canary))
    assert offline.shape == (canary_rows, CLASSES) and np.isfinite(offline).all()
    return directory


def store_candidate(storage, local: Path, day: dt.date, model: str = "mnist") -> str:
    """Upload a local version directory as a candidate (files, then MANIFEST.json); its path on the root."""
    from tfship.training.train import upload_candidate

    path, _digest, _reused = upload_candidate(storage, local, model=model, day=day)
    return path
