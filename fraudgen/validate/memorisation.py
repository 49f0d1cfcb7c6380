"""Anti-memorisation: a batch generated from training data must not copy training rows.

Exact copies: every batch row's signature key (user, amount, currency, timestamp, merchant, type — the
seed's dedup key) is looked up in the set of training signatures, recomputed from the training rows'
content so a copied row is found whatever its transaction id or signature column says.
Near copies: distance to the closest training record (DCR) of the batch sample, compared with the DCR
of held-out real rows; the share of batch rows closer than the holdout's 5th percentile should be ≈ 5 %.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from fraudgen.columnar import compute_signatures
from fraudgen.schema import conform
from fraudgen.validate.hashing import signature_prefixes, sorted_unique
from fraudgen.validate.schema_checks import check_block
from fraudgen.validate.summary import BlockSummary

DCR_FEATURES = ("log_amount", "hour", "weekday", "lat", "lon", "ttype", "channel", "status", "fraud")
MAX_DCR_ROWS = 5_000


def training_keys(training: pa.Table) -> np.ndarray:
    """Sorted unique signature prefixes of the training rows, recomputed from their content."""
    keys, _ = signature_prefixes(compute_signatures(conform(training)))
    return sorted_unique(keys)


def exact_copies(batch_keys: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Mask of batch keys present in ``known`` (sorted unique uint64)."""
    if known.size == 0 or batch_keys.size == 0:
        return np.zeros(batch_keys.size, dtype=bool)
    pos = np.minimum(np.searchsorted(known, batch_keys), known.size - 1)
    return known[pos] == batch_keys


def _feature_matrix(table: pa.Table) -> np.ndarray:
    from fraudgen.validate.statistics import _features

    summary = BlockSummary()
    cols = check_block(table, None, summary)
    amount = cols.amount if cols.amount is not None else np.zeros(cols.n)
    rows = np.arange(cols.n)
    feats = _features(cols, rows, np.zeros(cols.n, np.uint64), amount)
    return _matrix(feats)


def _matrix(feats: dict[str, np.ndarray]) -> np.ndarray:
    m = np.stack([np.asarray(feats[f], dtype=np.float64) for f in DCR_FEATURES], axis=1)
    return np.nan_to_num(m)


def dcr_report(
    sample: dict[str, np.ndarray], training: pa.Table, holdout: pa.Table | None, seed: int = 0
) -> dict[str, Any]:
    """DCR of the batch sample (and the holdout) to the training rows, on standardised features."""
    from scipy.spatial import cKDTree  # imported here: only batches from training data need it

    rng = np.random.default_rng(seed)
    train = _feature_matrix(training)
    if train.shape[0] == 0 or not sample:
        return {}
    batch = _matrix(sample)
    if batch.shape[0] > MAX_DCR_ROWS:
        batch = batch[rng.choice(batch.shape[0], MAX_DCR_ROWS, replace=False)]
    scale = train.std(axis=0)
    scale[scale == 0] = 1.0
    centre = train.mean(axis=0)
    tree = cKDTree((train - centre) / scale)
    d_batch, _ = tree.query((batch - centre) / scale, k=1)
    out: dict[str, Any] = {
        "training_rows": int(train.shape[0]),
        "batch_rows": int(batch.shape[0]),
        "dcr_batch_p5": float(np.percentile(d_batch, 5)),
        "dcr_batch_median": float(np.median(d_batch)),
        "dcr_batch_zero_share": float(np.mean(d_batch < 1e-9)),
    }
    if holdout is not None and holdout.num_rows:
        hold = _feature_matrix(holdout)
        if hold.shape[0] > MAX_DCR_ROWS:
            hold = hold[rng.choice(hold.shape[0], MAX_DCR_ROWS, replace=False)]
        d_hold, _ = tree.query((hold - centre) / scale, k=1)
        p5 = float(np.percentile(d_hold, 5))
        out.update(
            holdout_rows=int(hold.shape[0]),
            dcr_holdout_p5=p5,
            dcr_holdout_median=float(np.median(d_hold)),
            closer_than_holdout_p5=float(np.mean(d_batch < p5)),
        )
    return out
