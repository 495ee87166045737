"""Pure formatting and arithmetic of the report (no runs needed)."""

import math

import numpy as np
import pytest

from coworld_bench.report.paper import paper_pair, parse_cell
from coworld_bench.report.plots import embedding_kl, ratio_text
from coworld_bench.report.tables import Cell, column_order, format_cell


def cell(scores, seeds=None):
    return Cell("coworld", "WC->DC", seeds or list(range(len(scores))), list(scores), [])


def test_cells_mark_missing_seeds():
    assert format_cell(cell([4000.0, 4100.0, 4200.0]), 3, 0) == "4100±82"
    assert format_cell(cell([4000.0, 4200.0]), 3, 0) == "4100±100 (2/3 seeds)"
    assert format_cell(cell([]), 3, 0) == "– (0/3 seeds)"
    assert format_cell(cell([1.25, 1.75]), 2, 1) == "1.5±0.2"  # 0.25 rounds half to even
    empty = cell([])
    assert math.isnan(empty.mean) and math.isnan(empty.std)


def test_paper_cells_and_pairs_parse():
    assert parse_cell("4845±14") == (4845.0, 14.0)
    assert parse_cell("2730") == (2730.0, None)
    assert parse_cell("") is None
    assert paper_pair("BP->DC*") == ("mw-button-press", "mw-door-close")
    assert paper_pair("MW:Button Press -> RD:Push Button") == ("mw-button-press", "rd-push-green")


def test_columns_follow_the_paper_order():
    assert column_order(["WC->DC", "HP->DC", "BP->DC*", "DC"], "metaworld") == \
        ["BP->DC*", "WC->DC", "DC", "HP->DC"]


def test_embedding_kl_by_hand():
    source = np.array([[0.0, 0.0]])            # softmax (1/2, 1/2)
    target = np.array([[np.log(3.0), 0.0]])    # softmax (3/4, 1/4)
    expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert embedding_kl(source, target) == pytest.approx(expected)
    assert embedding_kl(target, target) == pytest.approx(0.0, abs=1e-12)


def test_ratio_text_keeps_small_ratios_visible():
    assert ratio_text(1.234) == "1.23"
    assert ratio_text(0.0029) == "0.0029"


def test_welch_interval_by_hand_and_against_scipy():
    """a = 1, 2, 3 and b = 0, 0, 1: difference 5/3, standard error sqrt(1/3 + 1/9) = 2/3,
    Welch's df = (4/9)^2 / ((1/3)^2 / 2 + (1/9)^2 / 2) = 3.2."""
    from scipy import stats

    from coworld_bench.report.claims import welch_interval

    diff, low, high = welch_interval([1, 2, 3], [0, 0, 1])
    half = stats.t.ppf(0.975, 3.2) * 2 / 3
    assert diff == pytest.approx(5 / 3)
    assert (low, high) == pytest.approx((5 / 3 - half, 5 / 3 + half))
    ci = stats.ttest_ind([1, 2, 3], [0, 0, 1], equal_var=False).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high))
    assert welch_interval([5.0], [1.0, 2.0]) is None  # one seed: no interval
    one = welch_interval([1.0, 3.0], None)  # one-sample: mean 2, se 1, df 1
    assert one == pytest.approx((2.0, 2.0 - stats.t.ppf(0.975, 1), 2.0 + stats.t.ppf(0.975, 1)))
