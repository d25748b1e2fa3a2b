"""Raw JSON lines (or Parquet) of one day -> validated, deduplicated TFRecords, quarantine and stats.

The JVM side (DataFrame -> DataFrame functions) reads the files and assigns every line to an
output part from Spark's xxhash64 of its id, so all copies of an id meet in the same part; Spark
sorts each partition by (part, id, line). The Python side streams over the sorted lines,
validates them, drops duplicate ids deterministically, and produces one TFRecord shard, one
quarantine file and one statistics file per part as (name, bytes) pieces, which Hadoop's own
client writes (the project's NamedFileOutputFormat, see tfship.jvm): hdfs:// or file:// alike,
committed only when every task succeeded. The driver then moves the files to hidden
`.dt=D.inprogress` siblings, writes `_stats.json` and `_SUCCESS` last and renames the
directories into place. The output depends on the data and the shard counts, never on Spark's
parallelism.
"""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import hashlib
import itertools
import json
import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tfship.data.datasets import DatasetSpec
from tfship.data.profile import ProfileBuilder
from tfship.data.quality import ValidRow, validate_line
from tfship.data.schema import encode_features, frame_record
from tfship.data.stats import STATS_FILE, merge_stats
from tfship.errors import PreprocessError
from tfship.jvm import NAMED_FILE_OUTPUT_FORMAT, hadoop_jar_path
from tfship.paths import DEFAULT_RAW_ROOT, SUCCESS_MARKER, features_dir, quarantine_dir, raw_dir
from tfship.storage import Storage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

TEXT_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
EVAL_BUCKETS = 10_000
# ---- JVM side: DataFrame -> DataFrame ----------------------------------------------------


def read_raw_lines(spark: SparkSession, text_uris: Sequence[str], parquet_uris: Sequence[str]) -> DataFrame:
    """One row per input record: `value` (the JSON line) and `source` (its file)."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    frames = []
    if text_uris:
        frames.append(spark.read.text(list(text_uris)).select("value", F.col("_metadata.file_path").alias("source")))
    if parquet_uris:
        parquet = spark.read.parquet(*parquet_uris)
        frames.append(
            parquet.select(
                F.to_json(F.struct(*[F.col(c) for c in parquet.columns])).alias("value"),
                F.col("_metadata.file_path").alias("source"),
            )
        )
    if not frames:
        schema = StructType([StructField("value", StringType()), StructField("source", StringType())])
        return spark.createDataFrame([], schema)
    return functools.reduce(lambda a, b: a.unionByName(b), frames)


def hash_string_columns(lines: DataFrame, columns: Sequence[str]) -> DataFrame:
    """Add `<column>_hash`: Spark's xxhash64 of the string field, null where the field is absent."""
    from pyspark.sql import functions as F

    for column in columns:
        field = F.get_json_object("value", f"$.{column}")
        lines = lines.withColumn(f"{column}_hash", F.when(field.isNotNull(), F.xxhash64(field)))
    return lines


def assign_partitions(
    lines: DataFrame, spec: DatasetSpec, *, eval_share: float, train_shards: int, eval_shards: int
) -> DataFrame:
    """Add `part` (train shards first, then eval shards, then one part for lines without an id) and `id`."""
    from pyspark.sql import functions as F

    hashed = hash_string_columns(lines, spec.hashed_columns)
    id_hash = F.col("id_hash")
    is_eval = F.pmod(id_hash, F.lit(EVAL_BUCKETS)) < F.lit(round(eval_share * EVAL_BUCKETS))
    # The shard uses the hash's higher digits, independent of the split's lower ones.
    shard_hash = F.floor(id_hash / F.lit(EVAL_BUCKETS))
    part = (
        F.when(F.col("id_hash").isNull(), F.lit(train_shards + eval_shards))
        .when(is_eval, F.lit(train_shards) + F.pmod(shard_hash, F.lit(eval_shards)))
        .otherwise(F.pmod(shard_hash, F.lit(train_shards)))
    )
    hash_columns = [f"{column}_hash" for column in spec.hashed_columns]
    row_id = F.get_json_object("value", "$.id").alias("id")
    return hashed.select(part.cast("int").alias("part"), row_id, "value", "source", *hash_columns)


# ---- Python side: the output parts of one Spark partition -----------------------------------

# Directories of the Spark job's output, each moved into place by the driver.
FEATURES_OUT, QUARANTINE_OUT, STATS_OUT = "features", "quarantine", "stats"
# Bytes per record handed to the JVM writer: a file streams through in pieces of about this size.
CHUNK_BYTES = 1 << 20
FILES_SCHEMA = "name string, data binary"


@dataclass(frozen=True)
class WriteTarget:
    """How the parts are cut and compressed (picklable: it travels to the executors)."""

    hashed_columns: tuple[str, ...]
    train_shards: int
    eval_shards: int
    # gzip level 1: about 3x faster to write than the default 6 for ~15% more bytes;
    # readers decompress either at the same speed.
    compress_level: int = 1


class _GzipFile:
    """A gzip file (mtime 0: same content, same bytes) produced as (name, bytes) pieces."""

    def __init__(self, name: str, level: int) -> None:
        self.name, self.md5, self.size = name, hashlib.md5(), 0
        self._pending = bytearray()
        self._stream = gzip.GzipFile(filename="", mode="wb", fileobj=self, mtime=0, compresslevel=level)

    def write(self, data: bytes) -> int:  # the compressed bytes, from GzipFile
        self.md5.update(data)
        self.size += len(data)
        self._pending += data
        return len(data)

    def flush(self) -> None:
        pass

    def add(self, payload: bytes) -> Iterator[tuple[str, bytes]]:
        self._stream.write(payload)
        if len(self._pending) >= CHUNK_BYTES:
            yield self._take()

    def close(self) -> Iterator[tuple[str, bytes]]:
        self._stream.close()
        yield self._take()

    def _take(self) -> tuple[str, bytes]:
        piece = bytes(self._pending)
        self._pending.clear()
        return self.name, piece


def _line_md5(line: str) -> str:
    return hashlib.md5(line.encode("utf-8")).hexdigest()


def _shard_of(part: int, target: WriteTarget) -> tuple[str, int] | None:
    """(split, shard index) of an output part; None for the no-id part."""
    if part < target.train_shards:
        return "train", part
    if part < target.train_shards + target.eval_shards:
        return "eval", part - target.train_shards
    return None


def shard_path(split: str, shard: int) -> str:
    """Relative path of a shard inside the features partition."""
    return f"{split}/part-{shard:05d}.tfrecord.gz"


def quarantine_path(part: int) -> str:
    """Relative path of an output part's quarantined lines (only parts that quarantined any have one)."""
    return f"part-{part:05d}.jsonl.gz"


class _PartWriter:
    """One output part: its shard, its quarantined lines and its statistics, streamed."""

    def __init__(self, part: int, target: WriteTarget) -> None:
        self.part, self.target = part, target
        self.shard = _shard_of(part, target)
        self.records: _GzipFile | None = None
        self.quarantine: _GzipFile | None = None
        self.rows_read, self.written = 0, 0
        self.reasons: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.profile = ProfileBuilder()

    def reject(self, reason: str, source: str, value: str) -> Iterator[tuple[str, bytes]]:
        self.reasons[reason] += 1
        if self.quarantine is None:
            name = posixpath.join(QUARANTINE_OUT, quarantine_path(self.part))
            self.quarantine = _GzipFile(name, self.target.compress_level)
        line = json.dumps({"reason": reason, "source": source, "line": value}, ensure_ascii=False) + "\n"
        yield from self.quarantine.add(line.encode("utf-8"))

    def keep(self, row: ValidRow, hashes: Sequence[int]) -> Iterator[tuple[str, bytes]]:
        if self.shard is None:
            raise PreprocessError(f"row {row.row_id!r} has an id but landed in the no-id part")
        if self.records is None:
            name = posixpath.join(FEATURES_OUT, shard_path(*self.shard))
            self.records = _GzipFile(name, self.target.compress_level)
        features = {"id": row.row_id.encode("utf-8"), "label": row.label, "image": row.image}
        features |= {f"{column}_hash": h for column, h in zip(self.target.hashed_columns, hashes, strict=True)}
        self.written += 1
        self.labels[str(row.label)] += 1
        self.profile.add([row.image])
        yield from self.records.add(frame_record(encode_features(features)))

    def take_id(self, row_id: str | None, rows: Iterable[tuple]) -> Iterator[tuple[str, bytes]]:
        """Every line Spark read this id from: validate them, keep one copy, quarantine the rest."""
        copies = []
        for _, _, value, source, *hashes in rows:
            self.rows_read += 1
            reason, row = validate_line(value)
            if row is not None and any(h is None for h in hashes):
                reason, row = "missing_hashed_column", None
            if row is not None and row.row_id != row_id:
                # Spark grouped the line by another id than Python reads (a repeated "id" key, say).
                reason, row = "ambiguous_id", None
            if row is None:
                yield from self.reject(reason, source, value)  # type: ignore[arg-type]
            else:
                copies.append((row, hashes, value, source))
        if not copies:
            return
        # The same survivor on every rerun: the copy whose line has the smallest md5 (hashed only
        # on a collision, to keep the common path cheap); lines arrive sorted, so ties are stable.
        survivor = copies[0] if len(copies) == 1 else min(copies, key=lambda copy: _line_md5(copy[2]))
        for copy in copies:
            if copy is not survivor:
                yield from self.reject("duplicate_id", copy[3], copy[2])
        yield from self.keep(survivor[0], survivor[1])

    def finish(self) -> Iterator[tuple[str, bytes]]:
        shards = []
        if self.records is not None:
            yield from self.records.close()
            split, shard = self.shard  # type: ignore[misc]
            md5 = self.records.md5.hexdigest()
            path = shard_path(split, shard)
            size = self.records.size
            shards.append({"path": path, "split": split, "records": self.written, "md5": md5, "bytes": size})
        if self.quarantine is not None:
            yield from self.quarantine.close()
        stats = {
            "rows_read": self.rows_read,
            "quarantined": dict(self.reasons),
            "shards": shards,
            "labels": dict(self.labels),
            "profile": self.profile.to_dict(),
        }
        yield posixpath.join(STATS_OUT, f"part-{self.part:05d}.json"), json.dumps(stats, sort_keys=True).encode()


def write_partition(rows: Iterable[tuple], target: WriteTarget) -> Iterator[tuple[str, bytes]]:
    """Validate, deduplicate and write the output parts of one Spark partition, as (file, bytes) pieces.

    Rows are (part, id, value, source, *hashes), sorted by (part, id, value, source): every copy of
    an id is adjacent, so memory holds one id's lines and the open files' buffers, however large
    the partition. Each part yields its shard, its quarantine file and its statistics.
    """
    writer: _PartWriter | None = None
    for (part, row_id), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        if writer is None or writer.part != part:
            if writer is not None:
                yield from writer.finish()
            writer = _PartWriter(part, target)
        if row_id is None:  # no id Spark could read: each line on its own (the group may be huge)
            for line in group:
                yield from writer.take_id(None, [line])
        else:
            yield from writer.take_id(row_id, list(group))
    if writer is not None:
        yield from writer.finish()


def write_empty_shards(storage: Storage, features_tmp: str, target: WriteTarget, written: set[str]) -> list[dict]:
    """Empty shards for parts that received no row, so a day always has the same layout."""
    missing = []
    for part in range(target.train_shards + target.eval_shards):
        split, shard = _shard_of(part, target)  # type: ignore[misc]
        relative = shard_path(split, shard)
        if relative not in written:
            empty = _GzipFile(relative, target.compress_level)
            data = b"".join(piece for _, piece in empty.close())
            with storage.open_write(posixpath.join(features_tmp, relative)) as handle:
                handle.write(data)
            md5 = empty.md5.hexdigest()
            missing.append({"path": relative, "split": split, "records": 0, "md5": md5, "bytes": empty.size})
    return missing


def _read_part_stats(storage: Storage, directory: str) -> list[dict]:
    if not storage.is_dir(directory):
        return []
    parts = []
    for name in storage.list(directory):
        with storage.open_read(posixpath.join(directory, name)) as handle:
            parts.append(json.loads(handle.read()))
    return parts


# ---- Driver: the whole day ----------------------------------------------------------------


def _sibling(path: str, suffix: str) -> str:
    head, name = posixpath.split(path)
    return posixpath.join(head, f".{name}.{suffix}")


def _swap_into_place(storage: Storage, temp: str, final: str) -> None:
    """Replace `final` by `temp` with two renames; the old copy is removed afterwards."""
    old = _sibling(final, "old")
    storage.delete(old, recursive=True)
    if storage.exists(final):
        storage.rename(final, old)
    storage.rename(temp, final)
    storage.delete(old, recursive=True)


def _explain_failure(err: Exception, inputs: Sequence[str]) -> str:
    message = str(err)
    named = [uri for uri in inputs if uri in message or uri.replace("file://", "file:") in message]
    if named:
        hint = re.search(r"(EOFException[^\n]*|Unexpected end of[^\n]*|Not in GZIP format[^\n]*)", message)
        detail = hint.group(1) if hint else "read error"
        return f"raw file {named[0]} is unreadable ({detail}); fix or remove it and rerun"
    tail = message.strip().splitlines()[:3]
    return f"the Spark job failed: {' | '.join(tail)}"


def _named_file_output_format(spark: SparkSession) -> Any:
    """The JVM writer class, or a clear error when the job was submitted without its jar."""
    from py4j.java_gateway import JavaClass

    found = functools.reduce(getattr, NAMED_FILE_OUTPUT_FORMAT.split("."), spark.sparkContext._jvm)
    if not isinstance(found, JavaClass):
        raise PreprocessError(
            f"{NAMED_FILE_OUTPUT_FORMAT} is not on Spark's classpath: submit with --jars {hadoop_jar_path()} "
            "(python -m tfship.jvm builds it; make setup does too)"
        )
    return found


def preprocess_day(
    spark: SparkSession,
    storage: Storage,
    *,
    spec: DatasetSpec,
    day: dt.date,
    eval_share: float = 0.1,
    train_shards: int = 4,
    eval_shards: int = 1,
    raw_root: str = DEFAULT_RAW_ROOT,
    partitions: int | None = None,
) -> dict:
    """Turn <raw_root>/<dataset>/dt=D into features/<dataset>/dt=D and quarantine/<dataset>/dt=D.

    Spark reads and writes through its own Hadoop client (`storage.uri` of every path); the
    driver's `storage` lists, renames and writes the few small files around the job.
    `partitions` (Spark's, of the write stage) changes how the work is spread, never the output;
    by default there are enough to keep every core busy.
    """
    if not 0.0 < eval_share < 1.0:
        raise PreprocessError(f"eval_share must be between 0 and 1, got {eval_share}")
    if train_shards < 1 or eval_shards < 1:
        raise PreprocessError(f"shard counts must be positive, got train={train_shards} eval={eval_shards}")
    raw = raw_dir(spec.name, day, raw_root)
    if not storage.is_dir(raw):
        raise PreprocessError(f"raw partition {storage.uri(raw)} does not exist")
    if not storage.exists(posixpath.join(raw, SUCCESS_MARKER)):
        raise PreprocessError(f"raw partition {storage.uri(raw)} has no {SUCCESS_MARKER}: it is not complete")
    names = [n for n in storage.list(raw) if not n.startswith(("_", "."))]
    unknown = [n for n in names if not n.endswith(TEXT_SUFFIXES + PARQUET_SUFFIXES)]
    if unknown:
        raise PreprocessError(f"raw partition {storage.uri(raw)} holds files of unknown format: {unknown}")
    text_uris = [storage.uri(posixpath.join(raw, n)) for n in names if n.endswith(TEXT_SUFFIXES)]
    parquet_uris = [storage.uri(posixpath.join(raw, n)) for n in names if n.endswith(PARQUET_SUFFIXES)]
    writer_class = _named_file_output_format(spark)

    final_features, final_quarantine = features_dir(spec.name, day), quarantine_dir(spec.name, day)
    features_tmp, quarantine_tmp = _sibling(final_features, "inprogress"), _sibling(final_quarantine, "inprogress")
    job_output = _sibling(final_features, "spark")  # the committer's output: features/, quarantine/, stats/
    temps = (job_output, features_tmp, quarantine_tmp)
    for temp in temps:
        storage.delete(temp, recursive=True)
    target = WriteTarget(hashed_columns=spec.hashed_columns, train_shards=train_shards, eval_shards=eval_shards)
    # A partition may hold several parts; a part is never split.
    partitions = partitions or max(train_shards + eval_shards + 1, 2 * spark.sparkContext.defaultParallelism)
    try:
        lines = read_raw_lines(spark, text_uris, parquet_uris)
        assigned = assign_partitions(
            lines, spec, eval_share=eval_share, train_shards=train_shards, eval_shards=eval_shards
        )
        pieces = (
            assigned.repartition(partitions, "part")
            .sortWithinPartitions("part", "id", "value", "source")
            .rdd.mapPartitions(functools.partial(write_partition, target=target))
        )
        writer_class.save(spark.createDataFrame(pieces, FILES_SCHEMA)._jdf, storage.uri(job_output))
        parts = _read_part_stats(storage, posixpath.join(job_output, STATS_OUT))
        for name, temp in ((FEATURES_OUT, features_tmp), (QUARANTINE_OUT, quarantine_tmp)):
            if storage.exists(posixpath.join(job_output, name)):
                storage.rename(posixpath.join(job_output, name), temp)
            else:
                storage.makedirs(temp)
        storage.delete(job_output, recursive=True)
        written = {shard["path"] for part in parts for shard in part["shards"]}
        parts.append(
            {"rows_read": 0, "quarantined": {}, "labels": {},
             "shards": write_empty_shards(storage, features_tmp, target, written)}
        )  # fmt: skip
        stats = merge_stats(
            parts,
            dataset=spec.name,
            day=day.isoformat(),
            source=storage.uri(raw),
            input_files=sorted(text_uris + parquet_uris),
            eval_share=eval_share,
            hashed_columns=list(spec.hashed_columns),
        )
    except Exception as err:
        for temp in temps:
            storage.delete(temp, recursive=True)
        if isinstance(err, PreprocessError):
            raise
        raise PreprocessError(_explain_failure(err, text_uris + parquet_uris)) from err

    with storage.open_write(posixpath.join(features_tmp, STATS_FILE)) as handle:
        handle.write(json.dumps(stats, indent=2, sort_keys=True).encode("utf-8"))
    for temp in (quarantine_tmp, features_tmp):
        with storage.open_write(posixpath.join(temp, SUCCESS_MARKER)) as handle:
            handle.write(b"")
    _swap_into_place(storage, quarantine_tmp, final_quarantine)
    _swap_into_place(storage, features_tmp, final_features)
    return stats
