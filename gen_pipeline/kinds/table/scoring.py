"""Scoring table rows: parsed lines in the original schema -> each row with its anomaly score.

Rows are read with the model's own schema and encoded with its own transform spec. A row that
cannot be parsed or encoded (wrong field count, not a number, unseen category) is written with
a ``reason`` and a null score instead of failing the job: rows in == rows scored + rows rejected.

One Arrow pass does the work: each task parses its lines, scores them and writes its own Parquet
part with pyarrow in the same Python worker (no second trip through the JVM, no JVM Parquet
writer), and returns a small summary (counts, a score histogram per label value) that the
driver merges into the row counts, score quantiles and ROC-AUC: no second pass over the output.
"""

from __future__ import annotations

import numpy as np

from gen_pipeline.kinds.table.schema import REASON, TableSchema

def score_table(bundle, parsed, schema: TableSchema):
    """Typed rows (``sources.read_table``'s output) -> source, line, the columns, score, reason."""
    import pyarrow as pa

    reasons = np.asarray(parsed.column(REASON).to_pylist(), dtype=object)
    good = np.equal(reasons, None)
    scores = np.full(len(reasons), np.nan)
    if good.any():
        rows = parsed.filter(pa.array(good)).select(schema.names).to_pandas()
        s, r = bundle.score(rows)
        where = np.flatnonzero(good)
        scores[where] = s
        reasons[where] = r
    out = parsed.select(["source", "line", *schema.names])
    out = out.append_column("score", pa.array(scores, type=pa.float64(), mask=np.isnan(scores)))
    return out.append_column("reason", pa.array(reasons.tolist(), type=pa.string()))
