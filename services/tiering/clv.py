"""Predicted value: the BG/NBD model of purchase counts and the Gamma-Gamma model of spend per
purchase, fitted per shop by maximum likelihood (scipy).

A buyer is summarised as (x, t_x, T, m): x repeat purchases (purchase days after the first),
t_x the time from the first purchase to the last, T the time from the first purchase to the end
of the calibration period, and m the mean value of the repeat purchases. Times here are in
weeks, as in the papers.

- BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way"): while alive, a
  customer buys at rate lambda ~ Gamma(r, alpha); after each purchase they drop out with probability
  p ~ Beta(a, b). Gives the probability a buyer is still alive and the expected number of
  purchases in the next t weeks.
- Gamma-Gamma (Fader and Hardie 2013, "The Gamma-Gamma model of monetary value"): a buyer's
  purchase values vary around their own mean, itself spread across buyers by (p, q, gamma). Gives
  the expected value of a buyer's future purchases, from repeat buyers only.

On the CDNOW sample (2,357 customers, 39 weeks) the fits reproduce the published estimates:
r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 and p = 6.25, q = 3.74, gamma = 15.44
(checked by a test).
A fit is refused with too few buyers: numbers from a handful of customers would be noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special

MIN_BUYERS = 200          # buyers the BG/NBD fit needs
MIN_REPEAT_BUYERS = 50    # buyers with a repeat purchase, for either model
BOUNDS = (-12.0, 12.0)    # the search space of each parameter's logarithm
EDGE = 1.0                # a fit within a factor e of that edge is at it


class TooLittleData(ValueError):
    """Not enough buyers to fit the models; says how many there are and how many it needs."""


@dataclass(frozen=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    at_limit: bool = False

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """The probability that each buyer is still alive at T."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x)
        return np.where(x > 0, 1.0 / (1.0 + np.where(x > 0, ratio, 0.0)), 1.0)

    def expected_purchases(self, t: float, x: np.ndarray, t_x: np.ndarray,
                           T: np.ndarray) -> np.ndarray:
        """E[purchases in the next t weeks | x, t_x, T] (FHL 2005, equation 10)."""
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        head = (a + b + x - 1) / (a - 1)
        body = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        return np.asarray(head * body * self.p_alive(x, t_x, T))


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    at_limit: bool = False

    def expected_value(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """E[value of a purchase | x repeat purchases of mean m] (FH 2013, equation 5)."""
        p, q, g = self.p, self.q, self.gamma
        return np.asarray((p * (g + x * m)) / (p * x + q - 1))


def _bgnbd_ll(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray,
              weight: np.ndarray) -> float:
    r, alpha, a, b = np.exp(params)
    common = (special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
              + special.betaln(a, b + x) - special.betaln(a, b))
    first = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        second = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf)
    ll = common + np.logaddexp(first, second)
    return -float(np.sum(weight * ll))


def fit_bgnbd(x: ArrayLike, t_x: ArrayLike, T: ArrayLike,
              weight: ArrayLike | None = None) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters; `weight` counts buyers sharing a summary."""
    xs, txs, Ts = np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
    w = np.ones_like(xs) if weight is None else np.asarray(weight, float)
    buyers, repeat = int(w.sum()), int(w[xs > 0].sum())
    if buyers < MIN_BUYERS or repeat < MIN_REPEAT_BUYERS:
        raise TooLittleData(
            f"{buyers:,} buyers, {repeat:,} of them with a repeat purchase: the purchase model "
            f"needs at least {MIN_BUYERS:,} buyers and {MIN_REPEAT_BUYERS:,} repeat buyers in "
            "the period (a longer period or more history gives more)")
    found = optimize.minimize(_bgnbd_ll, np.zeros(4), args=(xs, txs, Ts, w),
                              method="Nelder-Mead", bounds=[BOUNDS] * 4,
                              options={"maxiter": 8000, "xatol": 1e-7, "fatol": 1e-9})
    r, alpha, a, b = np.exp(found.x)
    return BgNbd(float(r), float(alpha), float(a), float(b), _at_limit(found.x))


def _gg_ll(params: np.ndarray, x: np.ndarray, m: np.ndarray, weight: np.ndarray) -> float:
    p, q, g = np.exp(params)
    ll = (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q)
          + q * np.log(g) + (p * x - 1) * np.log(m) + p * x * np.log(x)
          - (p * x + q) * np.log(g + m * x))
    return -float(np.sum(weight * ll))


def fit_gamma_gamma(x: ArrayLike, m: ArrayLike,
                    weight: ArrayLike | None = None) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters from repeat buyers (x >= 1, mean value m)."""
    xs, ms = np.asarray(x, float), np.asarray(m, float)
    w = np.ones_like(xs) if weight is None else np.asarray(weight, float)
    keep = (xs > 0) & (ms > 0)
    if int(w[keep].sum()) < MIN_REPEAT_BUYERS:
        raise TooLittleData(
            f"{int(w[keep].sum()):,} repeat buyers with spend: the value model needs at least "
            f"{MIN_REPEAT_BUYERS:,}")
    # The model is scale-free (values s times larger: gamma s times larger, p and q alike), so
    # it is fitted on values in units of their mean: the search space then suits a shop in any
    # currency, yen or dinar.
    unit = float(np.average(ms[keep], weights=w[keep]))
    found = optimize.minimize(_gg_ll, np.zeros(3), args=(xs[keep], ms[keep] / unit, w[keep]),
                              method="Nelder-Mead", bounds=[BOUNDS] * 3,
                              options={"maxiter": 8000, "xatol": 1e-7, "fatol": 1e-9})
    p, q, g = np.exp(found.x)
    return GammaGamma(float(p), float(q), float(g) * unit, _at_limit(found.x))


def _at_limit(log_params: np.ndarray) -> bool:
    """Whether the best fit lies at the edge of the search: the data do not pin the model
    down (a shop whose buyers do not behave as the model assumes), said with the figures."""
    # Where the likelihood runs flat toward the edge (a -> 0 and b -> infinity: no buyer seen
    # dropping out), the search stops somewhat short of it.
    return bool(np.any(np.abs(log_params) > BOUNDS[1] - EDGE))
