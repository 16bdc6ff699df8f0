"""Typed Dagster metadata shared by the assets."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def table_metadata(frame: pd.DataFrame) -> dg.TableMetadataValue:
    """A pandas frame as Dagster's typed table (floats rounded for reading)."""
    numeric = {column: pd.api.types.is_numeric_dtype(frame[column]) for column in frame.columns}
    columns = [dg.TableColumn(str(c), "float" if numeric[c] else "string") for c in frame.columns]
    records = [
        dg.TableRecord({str(c): round(float(row[c]), 3) if numeric[c] else str(row[c]) for c in frame.columns})
        for _, row in frame.iterrows()
    ]
    return dg.TableMetadataValue(records=records, schema=dg.TableSchema(columns=columns))
