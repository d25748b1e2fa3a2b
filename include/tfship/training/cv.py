"""k-fold cross-validation on a subsample, to choose hyperparameters before the full training.

Folds and the subsample are chosen by the hashed id, so every configuration sees the same
rows and a rerun sees them again. One configuration is one unit of work (one mapped task).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tfship.errors import ConfigError
from tfship.training.features_io import LocalFeatures, make_dataset
from tfship.training.model import HParams, build_model

DEFAULT_GRID: tuple[dict[str, Any], ...] = tuple(
    {"learning_rate": lr, "filters": filters, "dropout": 0.25} for lr in (1e-3, 3e-3) for filters in (16, 32)
)


def grid_from_param(raw: Sequence[dict[str, Any]] | None) -> list[HParams]:
    """The configurations to try (the DEFAULT_GRID when none are given), checked and de-duplicated."""
    configs = [HParams.from_dict(dict(item)) for item in (raw or DEFAULT_GRID)]
    seen: dict[str, HParams] = {}
    for config in configs:
        seen.setdefault(config.config_id, config)
    if not seen:
        raise ConfigError("the cross-validation grid is empty")
    return list(seen.values())


def cross_validate(
    features: LocalFeatures,
    hparams: HParams,
    *,
    folds: int = 3,
    subsample: float = 0.3,
    epochs: int = 2,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Train on k-1 folds and score the held-out fold, k times; mean and spread of accuracy."""
    import keras

    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}")
    if not 0 < subsample <= 1:
        raise ConfigError(f"subsample must be in (0, 1], got {subsample}")
    accuracies = []
    for fold in range(folds):
        keras.utils.set_random_seed(seed + fold)
        train = make_dataset(
            features.files["train"],
            batch_size=batch_size,
            training=True,
            seed=seed,
            folds=(folds, fold, False),
            subsample=subsample,
        )
        held_out = make_dataset(
            features.files["train"],
            batch_size=batch_size,
            training=False,
            seed=seed,
            folds=(folds, fold, True),
            subsample=subsample,
        )
        model = build_model(hparams)
        model.fit(train, epochs=epochs, verbose=0)
        _, accuracy = model.evaluate(held_out, verbose=0)
        accuracies.append(round(float(accuracy), 6))
    return {
        "config_id": hparams.config_id,
        "hparams": hparams.to_dict(),
        "fold_accuracy": accuracies,
        "mean_accuracy": round(statistics.fmean(accuracies), 6),
        "std_accuracy": round(statistics.pstdev(accuracies), 6),
        "folds": folds,
        "subsample": subsample,
        "epochs": epochs,
    }


def choose_best(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Highest mean accuracy; ties go to the smaller spread, then to the config id."""
    if not results:
        raise ConfigError("no cross-validation results to choose from")
    return sorted(results, key=lambda r: (-r["mean_accuracy"], r["std_accuracy"], r["config_id"]))[0]


def write_report(results: Sequence[dict[str, Any]], directory: Path) -> dict[str, Any]:
    """cv_results.json and cv_results.png (mean and spread per configuration); returns the best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = choose_best(results)
    ordered = sorted(results, key=lambda r: r["config_id"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cv_results.json").write_text(
        json.dumps({"best": best["config_id"], "results": ordered}, indent=2, sort_keys=True)
    )
    figure, axis = plt.subplots(figsize=(1.6 * len(ordered) + 2, 3.5))
    means = [r["mean_accuracy"] for r in ordered]
    spreads = [r["std_accuracy"] for r in ordered]
    colours = ["tab:green" if r is best else "tab:blue" for r in ordered]
    axis.bar(range(len(ordered)), means, yerr=spreads, capsize=4, color=colours)
    axis.set_xticks(range(len(ordered)), [r["config_id"] for r in ordered], rotation=20, fontsize=8)
    axis.set(ylabel="held-out accuracy", title=f"{ordered[0]['folds']}-fold CV (best: {best['config_id']})")
    axis.set_ylim(max(0.0, min(means) - 0.1), 1.0)
    figure.tight_layout()
    figure.savefig(directory / "cv_results.png", dpi=80, metadata={"Software": None})
    plt.close(figure)
    return best
