from __future__ import annotations

import numpy as np

from multiloss.report.experts import is_moe_metric, load_matrix, moe_layers
from multiloss.report.table import Table


def test_layers_and_relative_load() -> None:
    rows = [{"step": 1, "metric/enc.moe/load/0": 30.0, "metric/enc.moe/load/1": 10.0,
             "metric/enc.moe/cv": 0.5, "metric/enc.attn/entropy": 1.0}]  # fmt: skip
    table = Table.from_rows(rows)
    layers = moe_layers(table)
    assert layers == {"enc.moe": [0, 1]}
    np.testing.assert_allclose(load_matrix(table, "enc.moe", [0, 1]), [[1.5, 0.5]])  # mean 20
    assert is_moe_metric("enc.moe/cv", layers)
    assert is_moe_metric("enc.moe/bias/3", layers)
    assert not is_moe_metric("enc.attn/entropy", layers)
    assert not is_moe_metric("other.moe/cv", layers)
