"""The predicted-value models against the papers' own figures on the CDNOW sample (2,357
customers of 1997, 39 weeks; shipped in the `lifetimes` wheel, installed for its data only)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from services.tiering import clv


def cdnow() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the lifetimes wheel (its CDNOW data) is missing: `make` installs it")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / (
        "cdnow_customers_summary_with_transactions.csv")
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_bg_nbd_reproduces_the_published_cdnow_estimates() -> None:
    rows = cdnow()
    assert len(rows) == 2357
    fit = clv.fit_bgnbd([float(r["x"]) for r in rows], [float(r["t_x"]) for r in rows],
                        [float(r["T"]) for r in rows])
    # Fader, Hardie and Lee (2005), table 1.
    assert (round(fit.r, 3), round(fit.alpha, 3), round(fit.a, 3), round(fit.b, 3)) == (
        0.243, 4.414, 0.793, 2.426)
    # Their worked example: x = 2, t_x = 30.43, T = 38.86 expects 1.226 purchases in 39 weeks.
    one = np.array([2.0]), np.array([30.43]), np.array([38.86])
    assert fit.expected_purchases(39, *one)[0] == pytest.approx(1.226, abs=5e-4)
    assert 0 < fit.p_alive(*one)[0] < 1
    assert fit.p_alive(np.array([0.0]), np.array([0.0]), np.array([38.86]))[0] == 1.0


def test_gamma_gamma_reproduces_the_published_cdnow_estimates() -> None:
    rows = cdnow()
    fit = clv.fit_gamma_gamma([float(r["x"]) for r in rows], [float(r["zbar"]) for r in rows])
    # Fader and Hardie (2013), "The Gamma-Gamma model of monetary value".
    assert (fit.p, fit.q, fit.gamma) == (pytest.approx(6.25, abs=0.01),
                                         pytest.approx(3.74, abs=0.01),
                                         pytest.approx(15.44, abs=0.01))
    # A buyer's expected spend lies between their own mean and the population's.
    value = fit.expected_value(np.array([1.0]), np.array([100.0]))[0]
    population = fit.p * fit.gamma / (fit.q - 1)
    assert min(100.0, population) < value < max(100.0, population)


def test_too_few_buyers_is_refused_saying_how_many_are_needed() -> None:
    with pytest.raises(clv.TooLittleData, match="at least 200 buyers and 50 repeat buyers"):
        clv.fit_bgnbd([1, 0, 2], [3.0, 0.0, 5.0], [10.0, 10.0, 10.0])
    with pytest.raises(clv.TooLittleData, match="at least 50"):
        clv.fit_gamma_gamma([1, 2], [10.0, 20.0])


def test_the_value_model_does_not_depend_on_the_currency() -> None:
    rows = [r for r in cdnow() if float(r["x"]) > 0]
    x, m = [float(r["x"]) for r in rows], [float(r["zbar"]) for r in rows]
    dollars = clv.fit_gamma_gamma(x, m)
    # The same buyers in a currency worth 10,000 times less: gamma scales, p and q stay (the
    # search space of the parameters would otherwise cut gamma off at e^12 = 162,755).
    small = clv.fit_gamma_gamma(x, [v * 10_000 for v in m])
    assert (small.p, small.q) == (pytest.approx(dollars.p, rel=1e-4),
                                  pytest.approx(dollars.q, rel=1e-4))
    assert small.gamma == pytest.approx(dollars.gamma * 10_000, rel=1e-4)
    assert not dollars.at_limit and not small.at_limit


def test_buyers_who_never_drop_out_make_a_fit_at_the_edge() -> None:
    # Every buyer keeps buying at their own Poisson rate and none lapses: the purchase model's
    # dropout runs off to nothing (a -> 0, b -> infinity), which the fit says.
    rng = np.random.default_rng(7)
    T = rng.uniform(20, 52, 1000)
    times = [np.sort(rng.uniform(0, t, rng.poisson(rate * t)))
             for rate, t in zip(rng.gamma(2.0, 0.1, 1000), T, strict=True)]
    fit = clv.fit_bgnbd([len(ts) for ts in times], [ts[-1] if len(ts) else 0.0 for ts in times],
                        T)
    assert fit.at_limit and fit.a / (fit.a + fit.b) < 1e-6
    rows = cdnow()
    assert not clv.fit_bgnbd([float(r["x"]) for r in rows], [float(r["t_x"]) for r in rows],
                             [float(r["T"]) for r in rows]).at_limit
