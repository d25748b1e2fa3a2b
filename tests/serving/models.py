"""Tiny SavedModels with the project's signature, made without training, and their canary.json.

Images of class k carry a bright band at rows 2k+4..2k+5 over faint noise; a linear layer that
sums each band is therefore accurate by construction. The labels come from the generator, not
from the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

IMAGE_SIDE = 28
CLASSES = 10


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 28, 28, 1) uint8 images and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=count)
    images = rng.integers(0, 30, size=(count, IMAGE_SIDE, IMAGE_SIDE, 1))
    for index, label in enumerate(labels):
        images[index, 4 + 2 * label : 6 + 2 * label, 4:24, 0] = rng.integers(180, 256, size=(2, 20))
    return images.astype(np.uint8), labels.astype(np.int64)


def _band_weights() -> np.ndarray:
    weights = np.zeros((IMAGE_SIDE * IMAGE_SIDE, CLASSES), dtype=np.float32)
    for label in range(CLASSES):
        for row in (4 + 2 * label, 5 + 2 * label):
            weights[row * IMAGE_SIDE + 4 : row * IMAGE_SIDE + 24, label] = 0.2
    return weights


def export_model(
    directory: Path, kind: str = "good", *, canary_rows: int = 64, seed: int = 7, warmup: bool = False
) -> Path:
    """Write a version directory: SavedModel + canary.json (+ warmup records).

    kind: good, constant, no_variables, or big (good, plus 60 MB of unused weights: memory to account for).
    """
    import tensorflow as tf

    weights = _band_weights() if kind != "constant" else np.zeros((IMAGE_SIDE * IMAGE_SIDE, CLASSES), np.float32)

    class BandModel(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(weights)
            self.bias = tf.Variable(np.zeros(CLASSES, np.float32))
            if kind == "big":
                self.ballast = tf.Variable(np.ones(15_000_000, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE, 1], tf.float32, name="input_image")])
        def serve(self, input_image: tf.Tensor) -> dict[str, tf.Tensor]:
            flat = tf.reshape(input_image, [-1, IMAGE_SIDE * IMAGE_SIDE]) / 255.0
            return {"probabilities": tf.nn.softmax(tf.matmul(flat, self.weights) + self.bias)}

    module = BandModel()
    directory.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
    images, labels = synthetic_images(canary_rows, seed)
    offline = module.serve(tf.constant(images, tf.float32))["probabilities"].numpy()
    canary = {
        "signature_name": "serving_default",
        "input_name": "input_image",
        "ids": list(range(canary_rows)),
        "labels": labels.tolist(),
        "instances": images.astype(int).tolist(),
        "probabilities": offline.astype(float).tolist(),
    }
    (directory / "canary.json").write_text(json.dumps(canary))
    if warmup:  # what training exports: TF Serving replays them before the version is AVAILABLE
        from tfship.serving.warmup import write_warmup

        write_warmup(directory, model="any", instances=canary["instances"], input_name="input_image")
    if kind == "no_variables":
        shutil.rmtree(directory / "variables")
    return directory


def publish_copy(source: Path, serving_dir: Path, version: int) -> Path:
    """Copy a model under a staging name, then rename it to its number (what publication does)."""
    serving_dir.mkdir(parents=True, exist_ok=True)
    staging = serving_dir / f".staging-{version}"
    shutil.copytree(source, staging)
    target = serving_dir / str(version)
    staging.rename(target)
    return target
