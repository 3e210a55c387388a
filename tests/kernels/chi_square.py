"""Pearson chi-square goodness-of-fit and its p-value, without scipy.

The p-value is the chi-square survival function: Q(df / 2, statistic / 2), the regularised upper
incomplete gamma function (torch.special.gammaincc).
"""

from __future__ import annotations

import torch


def p_value(statistic: float, degrees_of_freedom: int) -> float:
    q = torch.special.gammaincc(
        torch.tensor(degrees_of_freedom / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)
    )
    return float(q)


def goodness_of_fit(observed: torch.Tensor, expected_probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """p-value of observed counts [num_bins] against probabilities [num_bins] (summing to 1).

    Bins with expected count below min_expected are pooled into one, as the chi-square approximation
    needs; observed counts in bins of probability 0 make the p-value 0 outright.
    """
    observed = observed.to(torch.float64).flatten()
    expected_probs = expected_probs.to(torch.float64).flatten()
    if observed[expected_probs == 0].sum() > 0:
        return 0.0
    expected = expected_probs * observed.sum()
    is_small = expected < min_expected
    obs = observed[~is_small]
    exp = expected[~is_small]
    if is_small.any() and expected[is_small].sum() > 0:
        obs = torch.cat([obs, observed[is_small].sum().reshape(1)])
        exp = torch.cat([exp, expected[is_small].sum().reshape(1)])
    statistic = float(((obs - exp) ** 2 / exp).sum())
    return p_value(statistic, obs.numel() - 1)
