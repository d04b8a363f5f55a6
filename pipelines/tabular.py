"""Tabular input for anomaly detection: CSV (or UCR text) -> validated arrays -> `tf.data`.

A `Schema` declares which columns a detector reads (features), which one says what a row is
(label: 0 = normal, anything else = anomaly), and which one orders rows in time. Files are
validated before anything trains: a missing column, a cell that is not a number, a NaN or an
infinity stops the run with one line naming the file, the line and the column.

    table = load_table("../shared/data/creditcard-fraud-sample/creditcard_sample.csv")
    splits = split(table)                    # by time when the schema has a time column
    train_normals = splits.train.normals()   # detectors learn what normal looks like
    dataset = batches(train_normals, 256, shuffle=True)

Sources (the fraud app's `--data`):
- `synthetic` (default, offline): `pipelines.transactions`' generated card transactions.
- a CSV file with a header row. The ULB/Kaggle `creditcard.csv` schema (Time, V1..V28, Amount,
  Class) is recognised by its header; other files name their label and time columns (or use
  the defaults `label`/`time` when present) and every other numeric column is a feature. A
  leading column with an empty name (the index pandas writes) is ignored.
- a UCR time-series text file (`*.txt`/`*.tsv`, whitespace-separated, class in the first
  column), e.g. ECG5000: each sample is a feature, rows of the normal class(es) are normal.

Splits follow how a detector is deployed: with a time column, train on the oldest 60% of rows,
select (threshold, best epoch) on the next 20% and test on the newest 20%; without one, a
stratified random split with the same shares and a fixed seed.
"""

import csv
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from pipelines import DataError, transactions

TRAIN_SHARE, VALIDATION_SHARE = 0.6, 0.2  # the rest is the test split
SPLIT_SEED = 1234
CHUNK_ROWS = 8_192  # rows validated and converted at a time
UCR_SUFFIXES = (".txt", ".tsv")


@dataclass(frozen=True)
class Schema:
    """Which columns mean what. `log_features`: non-negative, heavy-tailed features that the
    detectors read as log(1 + x)."""

    features: tuple[str, ...]
    label: str | None = None
    time: str | None = None
    log_features: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"features": list(self.features), "label": self.label, "time": self.time,
                "log_features": list(self.log_features)}

    @classmethod
    def from_json(cls, payload: dict) -> "Schema":
        return cls(tuple(payload["features"]), payload.get("label"), payload.get("time"),
                   tuple(payload.get("log_features", ())))


SYNTHETIC = Schema(transactions.FEATURES, transactions.LABEL, transactions.TIME,
                   transactions.LOG_FEATURES)
# ULB's creditcard.csv: Time is seconds since the first transaction (the split goes by it, it
# is not a feature); V1..V28 are PCA components; Amount is heavy-tailed.
CREDITCARD = Schema((*(f"V{i}" for i in range(1, 29)), "Amount"), "Class", "Time", ("Amount",))


@dataclass
class Table:
    """Rows of one source: features float32 [rows, features], labels (1 = anomaly) and times."""

    name: str
    schema: Schema
    features: np.ndarray
    labels: np.ndarray | None = None  # int64 [rows], 0 normal / 1 anomaly
    times: np.ndarray | None = None  # float64 [rows]
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    def take(self, index: np.ndarray) -> "Table":
        def pick(values):
            return None if values is None else values[index]

        return replace(self, features=self.features[index], labels=pick(self.labels),
                       times=pick(self.times))

    def normals(self) -> "Table":
        return self if self.labels is None else self.take(self.labels == 0)

    @property
    def anomaly_rate(self) -> float:
        return float(self.labels.mean()) if self.labels is not None and len(self) else 0.0


@dataclass
class Splits:
    train: Table
    validation: Table
    test: Table
    by: str  # "time" or "stratified"


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def load_table(data: str = "synthetic", label: str | None = None, time: str | None = None,
               features: list[str] | None = None, normal_classes: tuple[int, ...] = (1,),
               rows: int = 30_000, seed: int = 0) -> Table:
    """`synthetic`, a CSV file or a UCR text file (see the module docstring)."""
    if data == "synthetic":
        return synthetic_table(rows, seed)
    path = Path(data)
    if not path.is_file():
        raise DataError(f"--data {data}: no such file (use 'synthetic', a .csv or a UCR .txt)")
    if path.suffix.lower() in UCR_SUFFIXES:
        return read_ucr(path, normal_classes)
    return read_csv(path, infer_schema(path, label, time, features))


def synthetic_table(rows: int = 30_000, seed: int = 0) -> Table:
    columns = transactions.generate_transactions(rows, seed=seed)
    features = np.column_stack([columns[name] for name in SYNTHETIC.features]).astype("float32")
    return Table("synthetic transactions", SYNTHETIC, features,
                 columns[SYNTHETIC.label].astype("int64"), columns[SYNTHETIC.time])


def read_header(path: Path) -> list[str]:
    """The header row; the first line of a file that has no rows is an error, not a header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from None
    if not header or not any(cell.strip() for cell in header):
        raise DataError(f"{path}, line 1: empty file (expected a header row of column names)")
    return [cell.strip() for cell in header]


def infer_schema(path: Path, label: str | None = None, time: str | None = None,
                 features: list[str] | None = None) -> Schema:
    """A known schema (ULB's, the synthetic one) when the header holds most of its columns;
    else label/time as named (or `label`/`time` when present) and the rest as features."""
    header = read_header(path)
    names = set(header)
    if features is None and label is None and time is None:
        for known in (CREDITCARD, SYNTHETIC):
            # Most of a known schema's columns: that schema, and the rest are reported missing.
            if len(names & set(known.features)) >= len(known.features) / 2:
                return known
    for option, name in (("--label", label), ("--time", time)):
        if name is not None and name not in names:
            raise DataError(f"{path}, line 1: {option} {name}: no such column in the header")
    label = label or ("label" if "label" in names else None)
    time = time or ("time" if "time" in names else None)
    if features is None:
        features = [c for c in header if c and c not in (label, time)]
    if not features:
        raise DataError(f"{path}, line 1: no feature columns in the header")
    return Schema(tuple(features), label, time)


def read_csv(path: Path, schema: Schema) -> Table:
    """The whole file, validated; raises DataError at the first bad cell."""
    features, labels, times = [], [], []
    for chunk in read_csv_chunks(path, schema, require_label=schema.label is not None):
        features.append(chunk.features)
        labels.append(chunk.labels)
        times.append(chunk.times)
    if not features:
        raise DataError(f"{path}, line 2: no data rows after the header")
    return Table(
        str(path), schema, np.concatenate(features),
        None if schema.label is None else (np.concatenate(labels) != 0).astype("int64"),
        None if schema.time is None else np.concatenate(times),
    )


@dataclass
class Chunk:
    """Consecutive rows of a CSV file: the raw cells (to write back) and the parsed columns."""

    first_line: int
    rows: list[list[str]]
    features: np.ndarray
    labels: np.ndarray | None
    times: np.ndarray | None


def read_csv_chunks(path: Path, schema: Schema, chunk_rows: int = CHUNK_ROWS,
                    require_label: bool = False) -> Iterator[Chunk]:
    """Streams a CSV file in validated chunks, so a file larger than memory can be scored.

    The label and time columns are read when the header has them (the label is required only
    with `require_label`); the features always.
    """
    header = read_header(path)
    if header[0] == "":  # pandas' unnamed index column
        header[0] = "(index)"
    position = {name: i for i, name in enumerate(header)}
    missing = [name for name in schema.features if name not in position]
    if require_label and schema.label and schema.label not in position:
        missing.append(schema.label)
    if missing:
        raise DataError(f"{path}, line 1: missing column '{missing[0]}' (the schema needs"
                        f" {', '.join(schema.features)})")
    wanted = {"features": [position[name] for name in schema.features]}
    for role in ("label", "time"):
        name = getattr(schema, role)
        if name in position:
            wanted[role] = [position[name]]

    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader)
        line, rows = 1, []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise DataError(f"{path}, line {line}: {len(row)} cells, the header has"
                                f" {len(header)}")
            rows.append(row)
            if len(rows) == chunk_rows:
                yield _parse(path, header, rows, line - len(rows) + 1, wanted)
                rows = []
        if rows:
            yield _parse(path, header, rows, line - len(rows) + 1, wanted)


def _parse(path: Path, header: list[str], rows: list[list[str]], first_line: int,
           wanted: dict[str, list[int]]) -> Chunk:
    parsed = {}
    for role, columns in wanted.items():
        cells = [[row[c] for c in columns] for row in rows]
        try:
            values = np.asarray(cells, dtype=np.float64)
        except ValueError:
            values = None
        if values is None or not np.isfinite(values).all():
            _raise_bad_cell(path, header, cells, first_line, columns)
        parsed[role] = values
    return Chunk(
        first_line, rows, parsed["features"].astype("float32"),
        parsed["label"][:, 0] if "label" in parsed else None,
        parsed["time"][:, 0] if "time" in parsed else None,
    )


def _raise_bad_cell(path, header, cells, first_line, columns) -> None:
    """Finds the first cell of a chunk that is not a finite number and says where it is."""
    for offset, row in enumerate(cells):
        for column, cell in zip(columns, row):
            where = f"{path}, line {first_line + offset}, column '{header[column]}'"
            try:
                value = float(cell)
            except ValueError:
                what = "an empty cell" if not cell.strip() else f"{cell.strip()!r}"
                raise DataError(f"{where}: {what} is not a number") from None
            if math.isnan(value):
                raise DataError(f"{where}: NaN (a missing value) where a number is needed")
            if math.isinf(value):
                raise DataError(f"{where}: {cell.strip()} is not a finite number")


def write_scored_csv(path: Path, output: Path, schema: Schema,
                     score: Callable[[np.ndarray], np.ndarray], threshold: float,
                     chunk_rows: int = CHUNK_ROWS, progress: bool = True) -> tuple[int, int]:
    """Writes `path`'s rows back with `score` and `is_anomaly` (score > threshold) columns,
    chunk by chunk (`score(features)` -> scores), to a temporary file renamed to `output` at
    the end: a bad row leaves no output behind. Returns (rows, rows flagged)."""
    from tqdm import tqdm

    header = read_header(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial",
                                         dir=output.parent)
    rows = flagged = 0
    try:
        with os.fdopen(handle, "w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([*header, "score", "is_anomaly"])
            # A bar on a terminal only (disable=None), so an error stays the last line.
            with tqdm(unit=" rows", desc=f"scoring {path.name}",
                      disable=None if progress else True) as bar:
                for chunk in read_csv_chunks(path, schema, chunk_rows):
                    scores = score(chunk.features)
                    flags = scores > threshold
                    # Each score in the fewest digits that read back to it (float32: 9 at
                    # most): the file ranks rows as the model does.
                    writer.writerows([*row, str(s), int(f)]
                                     for row, s, f in zip(chunk.rows, scores, flags))
                    rows += len(scores)
                    flagged += int(flags.sum())
                    bar.update(len(scores))
        if rows == 0:
            raise DataError(f"{path}, line 2: no data rows after the header")
        os.chmod(temporary, file_mode(output))  # mkstemp's file is 0600
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return rows, flagged


def file_mode(path: Path) -> int:
    """The mode a new file at `path` would get (0666 less the umask), or the one it has."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_table_csv(path: Path, table: Table) -> None:
    """`table`'s rows as a CSV file a user would have: its schema's column names (time, the
    features, label), each float32 feature in the fewest digits that read back to it."""
    schema = table.schema
    header, cells = list(schema.features), [[str(v) for v in column] for column in table.features.T]
    if table.times is not None:
        header.insert(0, schema.time)
        cells.insert(0, [repr(float(t)) for t in table.times])
    if table.labels is not None:
        header.append(schema.label)
        cells.append([str(int(label)) for label in table.labels])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(zip(*cells))


def read_ucr(path: Path, normal_classes: tuple[int, ...] = (1,)) -> Table:
    """A UCR archive text file: one series a line, the class first, then the samples."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            cells = text.replace(",", " ").split()
            if not cells:
                continue
            if rows and len(cells) != len(rows[0]):
                raise DataError(f"{path}, line {line}: {len(cells)} values, line 1 has"
                                f" {len(rows[0])}")
            try:
                values = [float(c) for c in cells]
            except ValueError:
                bad = next(i for i, c in enumerate(cells) if not _is_number(c))
                raise DataError(f"{path}, line {line}, column {bad + 1}: {cells[bad]!r} is not"
                                " a number") from None
            if not all(math.isfinite(v) for v in values):
                bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
                raise DataError(f"{path}, line {line}, column {bad + 1}: {cells[bad]} is not a"
                                " finite number")
            rows.append(values)
    if not rows:
        raise DataError(f"{path}, line 1: empty file (expected one series a line)")
    table = np.asarray(rows)
    classes = table[:, 0].astype("int64")
    length = table.shape[1] - 1
    schema = Schema(tuple(f"t{i:03d}" for i in range(length)), "class")
    return Table(str(path), schema, table[:, 1:].astype("float32"),
                 (~np.isin(classes, normal_classes)).astype("int64"),
                 extra={"classes": classes})


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Splits and tf.data
# ---------------------------------------------------------------------------------------------


def split(table: Table, seed: int = SPLIT_SEED) -> Splits:
    """By time when the table has times (oldest 60% / next 20% / newest 20%), else stratified."""
    n = len(table)
    if table.times is not None:
        order = np.argsort(table.times, kind="stable")
        a, b = int(n * TRAIN_SHARE), int(n * (TRAIN_SHARE + VALIDATION_SHARE))
        return Splits(table.take(order[:a]), table.take(order[a:b]), table.take(order[b:]),
                      "time")
    rng = np.random.default_rng(seed)
    labels = table.labels if table.labels is not None else np.zeros(n, "int64")
    parts = ([], [], [])
    for value in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == value))
        a = int(round(len(rows) * TRAIN_SHARE))
        b = int(round(len(rows) * (TRAIN_SHARE + VALIDATION_SHARE)))
        for part, chunk in zip(parts, (rows[:a], rows[a:b], rows[b:])):
            part.append(chunk)
    train, validation, test = (table.take(np.sort(np.concatenate(p))) for p in parts)
    return Splits(train, validation, test, "stratified")


def check_trainable(splits: Splits, source: str) -> None:
    """Enough normal rows to learn from and to validate on."""
    if len(splits.train.normals()) < 20 or len(splits.validation) < 10:
        raise DataError(f"{source}: too few rows to train on ({len(splits.train.normals())}"
                        f" normal training rows, {len(splits.validation)} validation rows)")


def batches(table_or_features, batch_size: int, shuffle: bool = False, seed: int = 0,
            drop_remainder: bool = False):
    """Feature rows float32 [batch, features] as a `tf.data` pipeline (no labels: detectors
    learn from normal rows alone)."""
    import tensorflow as tf

    features = getattr(table_or_features, "features", table_or_features)
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(features, "float32"))
    if shuffle:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
