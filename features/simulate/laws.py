"""The random laws of the world, with the densities and integrals the oracle needs.

A `Delay` is a law of waiting times (onsets, careers, bursts); the confirmation law says
with what probability and after what delay risk review confirms an abusive request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Delay:
    """A random delay in days, with the density and survival function the oracle needs.

    Attributes:
        kind: "erlang" (`a` = integer shape, `b` = mean), "uniform" (on [a, b]) or
            "exponential" (`a` = mean).
        a: First parameter.
        b: Second parameter (unused for "exponential").
    """

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw `size` delays."""
        if self.kind == "erlang":
            return rng.gamma(self.a, self.b / self.a, size)
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b, size)
        return rng.exponential(self.a, size)

    def support(self) -> tuple[float, float]:
        """The interval outside which the density is zero."""
        return (self.a, self.b) if self.kind == "uniform" else (0.0, math.inf)

    def survival(self, x: np.ndarray) -> np.ndarray:
        """P(delay > x)."""
        x = np.asarray(x, dtype=float)
        if self.kind == "uniform":
            return np.clip((self.b - x) / (self.b - self.a), 0.0, 1.0)
        pos = np.maximum(x, 0.0)
        if self.kind == "exponential":
            return np.exp(-pos / self.a)
        scaled = pos * self.a / self.b
        terms = sum(scaled**k / math.factorial(k) for k in range(int(self.a)))
        return np.exp(-scaled) * terms

    def density(self, x: np.ndarray) -> np.ndarray:
        """The probability density at x."""
        x = np.asarray(x, dtype=float)
        if self.kind == "uniform":
            return np.where((x >= self.a) & (x <= self.b), 1.0 / (self.b - self.a), 0.0)
        pos = np.maximum(x, 0.0)
        if self.kind == "exponential":
            return np.where(x >= 0, np.exp(-pos / self.a) / self.a, 0.0)
        shape, rate = int(self.a), self.a / self.b
        value = rate**shape * pos ** (shape - 1) * np.exp(-rate * pos) / math.factorial(shape - 1)
        return np.where(x >= 0, value, 0.0)

    def as_dict(self) -> dict:
        """The law as meta.json records it."""
        return {"kind": self.kind, "a": self.a, "b": self.b}


def gamma(
    rng: np.random.Generator, shape: float, mean: np.ndarray | float, size: int
) -> np.ndarray:
    """Gamma draws of a given shape and mean (per element when `mean` is an array)."""
    return rng.gamma(shape, 1.0, size) * (np.asarray(mean) / shape)


@dataclass(frozen=True)
class ConfirmationLaw:
    """How risk review confirms abusive requests, and nothing else.

    An episode draws its confirmation probability as `cap * Beta(alpha, beta)`; each of its
    requests is then confirmed with that probability times `weights[class, outcome]`
    (tilted towards requests the merchant fought and won, normalised so that the mean over
    the outcomes of a class is 1), after `min_days` plus a mix of exponential delays.

    Attributes:
        weights: P(confirmed | class, outcome) / P(confirmed | class), rows of the request
            classes (zero for the honest ones).
        cap: 1 / the largest weight, which keeps the tilted probability a probability.
        concentration: Of the Beta law of an episode's probability.
        min_days: The shortest confirmation delay.
        mix: (weight, mean days) of the exponential parts of the rest of the delay.
    """

    weights: np.ndarray
    cap: float
    concentration: float
    min_days: float
    mix: tuple[tuple[float, float], ...]

    @classmethod
    def build(
        cls,
        outcome_probs: np.ndarray,
        abuse_classes: tuple[int, ...],
        outcome_weight: np.ndarray,
        concentration: float,
        min_days: float,
        mix: tuple[tuple[float, float], ...],
    ) -> ConfirmationLaw:
        """The law for the abuse classes a world files, under its outcome probabilities."""
        weights = np.zeros_like(outcome_probs)
        for request_class in abuse_classes:
            weights[request_class] = outcome_weight / (
                outcome_probs[request_class] @ outcome_weight
            )
        return cls(weights, 1.0 / float(weights.max()), concentration, min_days, mix)

    def beta(self, mean: float) -> tuple[float, float]:
        """(alpha, beta) of the Beta law of episodes whose mean probability is `mean`."""
        scaled = mean / self.cap
        return scaled * self.concentration, (1 - scaled) * self.concentration

    def probabilities(self, rng: np.random.Generator, mean: float, size: int) -> np.ndarray:
        """Draw `size` episodes' confirmation probabilities."""
        alpha, beta = self.beta(mean)
        return self.cap * rng.beta(alpha, beta, size)

    def delays(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw `size` confirmation delays beyond `min_days`."""
        weights = np.array([w for w, _ in self.mix])
        means = np.array([mean for _, mean in self.mix])
        part = rng.choice(len(weights), size=size, p=weights)
        return rng.exponential(means[part])

    def delay_cdf_integral(self, x: np.ndarray) -> np.ndarray:
        """The integral of the confirmation-delay CDF from 0 to x (days)."""
        excess = np.maximum(x - self.min_days, 0.0)
        total = excess.copy()
        for weight, mean in self.mix:
            total -= weight * mean * -np.expm1(-excess / mean)
        return total
