"""Tabular pipeline and the synthetic transaction generator: what the data says, schemas, splits,
and bad CSV files reported in one line with file, line and column."""

import os

import numpy as np
import pytest

from pipelines import DataError, tabular, transactions

# --- the synthetic generator ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream():
    return transactions.generate_transactions(20_000, fraud_rate=0.01, seed=3)


def test_generator_is_seeded_and_sized(stream):
    again = transactions.generate_transactions(20_000, fraud_rate=0.01, seed=3)
    other = transactions.generate_transactions(20_000, fraud_rate=0.01, seed=4)
    for name in transactions.COLUMNS:
        np.testing.assert_array_equal(stream[name], again[name])
    assert not np.array_equal(stream["amount"], other["amount"])
    assert len(stream["amount"]) == 20_000 and stream["is_fraud"].sum() == 200
    assert (np.diff(stream["time"]) >= 0).all()  # a stream, in time order


def test_cardholders_have_their_own_habits(stream):
    normal = stream["is_fraud"] == 0
    cards = stream["card_id"][normal]
    log_amount = np.log(stream["amount"][normal])
    per_card = [log_amount[cards == c].mean() for c in np.unique(cards)[:200]]
    # Typical amounts differ between cards far more than a pooled sample of 40 rows would.
    assert np.std(per_card) > 0.4
    ratio = stream["amount_ratio"][normal]
    assert 0.7 < np.median(ratio) < 1.4  # amount_ratio is relative to the card's own habit
    daytime = (stream["hour"][normal] > 7) & (stream["hour"][normal] < 23)
    assert 0.8 < daytime.mean() < 0.95  # and the night owls
    assert np.median(stream["distance_km"][normal]) < 10
    travelling = stream["distance_km"][normal] > 100
    assert 0.01 < travelling.mean() < 0.06
    # Travellers shop near their hotel: far from home, not far from the previous purchase.
    assert np.median(stream["km_from_last"][normal][travelling]) < 20


def test_frauds_follow_the_documented_patterns(stream):
    fraud = stream["is_fraud"] == 1
    testing = fraud & (stream["merchant_category"] == transactions.ONLINE) & (
        stream["amount"] <= 5.0)
    assert testing.sum() >= 50  # about a third of the frauds are card-testing charges
    assert np.median(stream["seconds_since_last"][testing]) < 200
    assert np.median(stream["txns_last_hour"][testing]) >= 2
    night = fraud & (stream["hour"] < 5) & (stream["amount_ratio"] >= 5)
    assert night.sum() >= 50
    far = fraud & (stream["distance_km"] >= 300)
    assert far.sum() >= 50
    assert np.median(stream["category_share"][far & ~night]) < np.median(
        stream["category_share"][~fraud])


# --- reading CSV files ------------------------------------------------------------------------


def write(path, text):
    path.write_text(text)
    return path


def creditcard_csv(path, rows=40, seed=0, index_column=True):
    """A small file in the ULB schema, with pandas' leading index column."""
    rng = np.random.default_rng(seed)
    names = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]
    lines = [("," if index_column else "") + ",".join(names)]
    for i in range(rows):
        values = [float(i * 100), *rng.normal(0, 1, 28).round(6), round(rng.lognormal(3, 1), 2),
                  int(i % 10 == 0)]
        lines.append((f"{i}," if index_column else "") + ",".join(str(v) for v in values))
    return write(path, "\n".join(lines) + "\n")


def test_synthetic_csv_round_trip_keeps_its_schema(tmp_path):
    path = tmp_path / "stream.csv"
    transactions.write_csv(path, rows=2_000, seed=1)
    table = tabular.load_table(str(path))
    columns = transactions.generate_transactions(2_000, seed=1)
    assert table.schema == tabular.SYNTHETIC
    np.testing.assert_allclose(table.features[:, 0], columns["amount_ratio"], rtol=1e-6)
    np.testing.assert_array_equal(table.labels, columns["is_fraud"])
    assert table.times is not None and len(table) == 2_000


def test_a_table_written_as_csv_reads_back_as_the_same_rows_and_scores_exactly(tmp_path):
    """What the fraud skew check sends: a table as a user's CSV file (its schema's names), and
    `predict`'s scores written back in digits that read back to the same float32."""
    for name, table in (("synthetic.csv", tabular.synthetic_table(3_000, seed=2)),
                        ("ulb.csv", tabular.load_table(str(creditcard_csv(tmp_path / "cc.csv"))))):
        path = tmp_path / name
        tabular.write_table_csv(path, table)
        again = tabular.load_table(str(path))
        assert again.schema == table.schema
        for part in ("features", "labels", "times"):
            np.testing.assert_array_equal(getattr(again, part), getattr(table, part))
    scores = np.random.default_rng(0).lognormal(0, 3, 3_000).astype("float32")
    scored = tmp_path / "scored.csv"
    tabular.write_scored_csv(tmp_path / "synthetic.csv", scored, tabular.SYNTHETIC,
                             lambda rows: scores[: len(rows)], threshold=1.0, progress=False)
    read = np.loadtxt(scored, delimiter=",", skiprows=1, usecols=(-2, -1))
    np.testing.assert_array_equal(read[:, 0].astype("float32"), scores)
    np.testing.assert_array_equal(read[:, 1], scores > 1.0)


def test_a_scored_csv_gets_the_usual_mode_new_and_keeps_its_mode_replaced(tmp_path):
    source = tmp_path / "rows.csv"
    tabular.write_table_csv(source, tabular.synthetic_table(500, seed=3))
    umask = os.umask(0o022)
    try:
        scored = tmp_path / "scored.csv"
        for expected in (0o644, 0o640):  # new: 0666 less the umask; replaced: as it was
            tabular.write_scored_csv(source, scored, tabular.SYNTHETIC,
                                     lambda rows: np.zeros(len(rows), "float32"), threshold=1.0,
                                     progress=False)
            assert scored.stat().st_mode & 0o777 == expected
            scored.chmod(0o640)
    finally:
        os.umask(umask)


def test_ulb_schema_is_recognised_and_the_index_column_ignored(tmp_path):
    table = tabular.load_table(str(creditcard_csv(tmp_path / "cc.csv")))
    assert table.schema == tabular.CREDITCARD
    assert table.features.shape == (40, 29) and table.features.dtype == np.float32
    assert table.labels.sum() == 4 and table.times[-1] == 3_900.0


def test_other_schemas_name_label_and_time_or_default_to_the_rest(tmp_path):
    path = write(tmp_path / "events.csv",
                 "sensor_a,sensor_b,when,outcome\n1,2,10,0\n3,4,20,1\n5,6,30,0\n")
    table = tabular.load_table(str(path), label="outcome", time="when")
    assert table.schema.features == ("sensor_a", "sensor_b")
    np.testing.assert_array_equal(table.labels, [0, 1, 0])
    unlabeled = tabular.load_table(str(write(tmp_path / "u.csv", "a,b\n1,2\n3,4\n")))
    assert unlabeled.labels is None and unlabeled.schema.features == ("a", "b")


def test_ucr_text_files_label_every_class_but_the_normal_one(tmp_path):
    lines = [f"{c} " + " ".join(f"{v:.4e}" for v in np.sin(np.arange(6) + c))
             for c in (1, 2, 1, 3, 1)]
    table = tabular.load_table(str(write(tmp_path / "ECG_TRAIN.txt", "\n".join(lines) + "\n")))
    assert table.features.shape == (5, 6)
    np.testing.assert_array_equal(table.labels, [0, 1, 0, 1, 0])


@pytest.mark.parametrize(
    "text, where, problem",
    [
        ("", "line 1", "empty file"),
        ("a,b,label\n", "line 2", "no data rows"),
        ("a,b,label\n1,2,0\n1,abc,0\n", "line 3, column 'b'", "'abc' is not a number"),
        ("a,b,label\n1,2,0\n1,2,0\n,2,0\n", "line 4, column 'a'", "an empty cell"),
        ("a,b,label\n1,2,0\n1,NaN,0\n", "line 3, column 'b'", "NaN"),
        ("a,b,label\n1,inf,0\n", "line 2, column 'b'", "not a finite number"),
        ("a,b,label\n1,2,0\n1,2\n", "line 3", "2 cells, the header has 3"),
        ("a,b,label\n1,2,zero\n", "line 2, column 'label'", "'zero' is not a number"),
    ],
)
def test_bad_cells_are_reported_with_file_line_and_column(tmp_path, text, where, problem):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as error:
        tabular.load_table(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}, {where}") and problem in message, message
    assert "\n" not in message


def test_a_missing_column_is_named(tmp_path):
    good = creditcard_csv(tmp_path / "cc.csv")
    lines = good.read_text().splitlines()
    header = lines[0].split(",")
    drop = header.index("V17")
    cut = ["," .join(c for i, c in enumerate(line.split(",")) if i != drop) for line in lines]
    path = write(tmp_path / "cut.csv", "\n".join(cut) + "\n")
    with pytest.raises(DataError, match=r"cut\.csv, line 1: missing column 'V17'"):
        tabular.read_csv(path, tabular.CREDITCARD)
    with pytest.raises(DataError, match="--label outcome: no such column"):
        tabular.load_table(str(good), label="outcome")


def test_a_bad_cell_deep_in_a_large_file_is_found_in_its_chunk(tmp_path):
    rows = [f"{i},{i * 0.5},0" for i in range(20_000)]
    rows[17_321] = "17321,oops,0"
    path = write(tmp_path / "big.csv", "a,b,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line 17323, column 'b': 'oops'"):
        tabular.load_table(str(path))


# --- splits and tf.data -----------------------------------------------------------------------


def test_time_split_trains_on_the_past_and_tests_on_the_future():
    table = tabular.synthetic_table(5_000, seed=2)
    splits = tabular.split(table)
    assert splits.by == "time"
    assert splits.train.times.max() <= splits.validation.times.min()
    assert splits.validation.times.max() <= splits.test.times.min()
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (3_000, 1_000, 1_000)
    assert splits.test.labels.sum() > 0 and splits.train.normals().labels.sum() == 0


def test_stratified_split_keeps_the_anomaly_rate(tmp_path):
    table = tabular.load_table(str(creditcard_csv(tmp_path / "cc.csv", rows=400)))
    table.times = None  # as if the file had no time column
    splits = tabular.split(table)
    assert splits.by == "stratified"
    for part in (splits.train, splits.validation, splits.test):
        assert part.anomaly_rate == pytest.approx(0.1, abs=0.02)
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 400
    again = tabular.split(table)
    np.testing.assert_array_equal(again.test.features, splits.test.features)


def test_batches_yield_feature_rows_only():
    table = tabular.synthetic_table(1_000)
    dataset = tabular.batches(table, 64, shuffle=True, seed=1)
    first = next(iter(dataset))
    assert first.shape == (64, len(tabular.SYNTHETIC.features)) and first.dtype.name == "float32"
    assert sum(int(b.shape[0]) for b in dataset) == 1_000
