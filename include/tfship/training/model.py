"""The sample MNIST-style model: hyperparameters, the Keras CNN and its TF Serving export.

Clients send raw pixel values 0..255 as floats, exactly as they appear in the raw data;
the model scales them to 0..1 itself, so no client can get the scaling wrong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tfship.data.schema import IMAGE_SIDE, NUM_CLASSES
from tfship.errors import ConfigError

INPUT_NAME = "input_image"
OUTPUT_NAME = "probabilities"
SIGNATURE_NAME = "serving_default"


@dataclass(frozen=True)
class HParams:
    """What cross-validation chooses between."""

    learning_rate: float = 1e-3
    filters: int = 16
    dropout: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 1 <= self.filters <= 256:
            raise ConfigError(f"filters must be in 1..256, got {self.filters}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def config_id(self) -> str:
        """A stable, readable id, e.g. lr0.001-f16-d0.25."""
        return f"lr{self.learning_rate:g}-f{self.filters}-d{self.dropout:g}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (XCom, files)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HParams:
        """Build from JSON, refusing unknown keys by name."""
        unknown = set(raw) - {"learning_rate", "filters", "dropout"}
        if unknown:
            raise ConfigError(f"unknown hyperparameters {sorted(unknown)}")
        return cls(**raw)


def build_model(hparams: HParams, *, for_serving: bool = False) -> Any:
    """A small CNN: rescale, two conv blocks, dropout, softmax over 10 classes (compiled).

    `for_serving` leaves out Dropout (the identity at inference): the exported graph then
    carries no random-generator state, so the same weights always give the same bytes.
    """
    import keras
    from keras import layers

    inputs = keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1), name=INPUT_NAME)
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.Conv2D(hparams.filters, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(hparams.filters * 2, 3, activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    if not for_serving:
        x = layers.Dropout(hparams.dropout)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name=OUTPUT_NAME)(x)
    model = keras.Model(inputs, outputs, name="tfship_mnist_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(hparams.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def export_for_serving(trained: Any, hparams: HParams, directory: Path) -> None:
    """SavedModel with `serving_default`: input_image float (-1,28,28,1) -> probabilities (-1,10)."""
    import tensorflow as tf

    model = build_model(hparams, for_serving=True)
    model.set_weights(trained.get_weights())

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIDE, IMAGE_SIDE, 1], tf.float32, name=INPUT_NAME)])
    def serve(input_image: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: model(input_image, training=False)}

    # A plain module tracks the variables by attribute path (keras' ExportArchive lists them
    # in an order that changes between processes, which would change the digest).
    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE_NAME: serve})
    # fingerprint.pb carries a random UUID on every save; loaders treat it as optional.
    (directory / "fingerprint.pb").unlink(missing_ok=True)


def load_serving_fn(directory: Path | str) -> Any:
    """The exported `serving_default` function: call with input_image=<float tensor>."""
    import tensorflow as tf

    return tf.saved_model.load(str(directory)).signatures[SIGNATURE_NAME]
