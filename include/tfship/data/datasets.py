"""What each dataset declares: which string columns are hashed to int64 features."""

from __future__ import annotations

from dataclasses import dataclass

from tfship.errors import ConfigError
from tfship.paths import check_name


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's name and the string columns that become `<column>_hash` int64 features.

    Hashing uses Spark's 64-bit `xxhash64` (seed 42), as ads-serving teams do to turn string
    ids into fixed-width integer features: smaller payloads and no vocabulary to ship.
    """

    name: str
    hashed_columns: tuple[str, ...] = ("id",)

    def __post_init__(self) -> None:
        check_name("dataset", self.name)
        if "id" not in self.hashed_columns:
            raise ConfigError(f"dataset {self.name!r} must hash 'id': split and shards derive from id_hash")
        for column in self.hashed_columns:
            if not column.isidentifier():
                raise ConfigError(f"dataset {self.name!r} declares a bad hashed column {column!r}")


DATASETS = {
    "mnist": DatasetSpec("mnist"),
    # The sample digits with an ads-style string column, to exercise feature-ID hashing.
    "mnist_campaigns": DatasetSpec("mnist_campaigns", hashed_columns=("id", "campaign")),
}


def dataset_spec(name: str) -> DatasetSpec:
    """The declared spec of a dataset, or a clear error naming the unknown one."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; declared: {', '.join(sorted(DATASETS))}") from None
