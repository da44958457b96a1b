"""Heart disease at four hospitals: the fedge task of the clinics example.

The records are the UCI Heart Disease data (920 patients of Cleveland, Hungary, Switzerland and
VA Long Beach; see data/NOTICE.md). The task predicts whether a patient has heart disease
(``num > 0``) from 13 clinical fields; the hospital (``dataset``) is the natural partition, so
``--partition by:dataset`` makes each hospital one client. ``id`` is dropped: the records are
numbered hospital by hospital, and within a hospital partly in label order.

Features are prepared the way fedge prepares a table it reads with no code (missing numbers
imputed with the training median, then standardised; text and yes/no fields one-hot), fitted
on the training rows only, as a :class:`fedge.data.Preprocessing` spec a device can apply to a
raw CSV row.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from fedge.data import Dataset, Preprocessing
from fedge.data.base import split_public_test
from fedge.tasks import Task

__all__ = ["CSV", "TASK", "build_model", "load_records", "preprocessing"]

CSV = Path(__file__).parent / "data" / "heart_disease_uci.csv"
LABEL, HOSPITAL, DROPPED = "num", "dataset", ("id",)
TEST_FRACTION, PUBLIC_FRACTION = 0.2, 0.1


def build_model(*, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Logistic regression on the 25 features (FLamby's Fed-Heart-Disease baseline model).

    A model this small also keeps central DP's noise small: the noise is added per weight.
    """
    return nn.Linear(input_shape[0], num_classes)


def preprocessing(frame: pd.DataFrame) -> Preprocessing:
    """The table spec fitted on ``frame`` (the training rows' features)."""
    columns: list[dict[str, Any]] = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            seen = column.dropna().to_numpy(dtype=np.float64)
            columns.append(
                {
                    "name": name,
                    "type": "numeric",
                    "median": float(np.median(seen)),
                    "mean": float(seen.mean()),
                    "std": float(seen.std()) or 1.0,
                }
            )
        else:
            categories = sorted({str(v) for v in column.dropna().tolist()})
            columns.append({"name": name, "type": "categorical", "categories": categories})
    return Preprocessing(
        "table", {"columns": columns, "label": "disease", "classes": ["no", "yes"]}
    )


def load_records() -> Dataset:
    """The records split once (seed 0) into train, public (for the release) and test rows."""
    frame = pd.read_csv(CSV, float_precision="round_trip")
    disease = (frame[LABEL] > 0).to_numpy(dtype=np.int64)
    hospitals = frame[HOSPITAL].astype(str).to_numpy()
    features = frame.drop(columns=[LABEL, HOSPITAL, *DROPPED])
    rows = np.arange(len(frame))
    (train, _), (public, _), (test, _) = split_public_test(
        rows,
        rows,
        test_size=round(len(rows) * TEST_FRACTION),
        public_size=round(len(rows) * PUBLIC_FRACTION),
    )
    x = preprocessing(features.iloc[train]).transform(features)
    return Dataset(
        name="heart-disease",
        x_train=x[train],
        y_train=disease[train],
        x_test=x[test],
        y_test=disease[test],
        x_public=x[public],
        y_public=disease[public],
        num_classes=2,
        groups_train=hospitals[train],
    )


TASK = Task(name="heart-disease", model=build_model, data=load_records, kind="binary")
