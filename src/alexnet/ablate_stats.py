"""The statistics of `alexnet ablate`, on plain numbers (no torch): the seed t-interval, kept inside the range a
difference of error rates can take; McNemar's exact test on the images two models classify differently; what
counts as a diverged run; and Figure 1's images-to-threshold at step granularity.

Two tests answer different questions. The t-interval over seeds asks whether the difference would survive a
new draw of initialisation and data order; with 2 or 3 seeds it is wide (t(0.975, 1) = 12.7). McNemar's test
asks, for the models actually trained, whether one classifies more of the same test images correctly than the
other: on 10,000 test images it sees differences well below a point, but says nothing about seed-to-seed spread.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

__all__ = [
    "BOUND",
    "t_quantile",
    "t_interval",
    "verdict",
    "mcnemar_exact",
    "pack_bits",
    "unpack_bits",
    "discordant",
    "diverged_reason",
    "step_curve",
    "images_to_threshold",
]

BOUND = 100.0  # a difference of two error rates, in points, lies in [-100, +100]

# t(0.975, df) for df = 1..30 (two-sided 95%); beyond, a Cornish-Fisher expansion around the normal's 1.96.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: list[float], bound: float | None = BOUND) -> dict[str, Any]:
    """Mean and 95% t-interval of ``values``; low/high are None with fewer than two values.

    The interval is cut to [-bound, +bound] (``clipped`` says whether it was): a difference of error rates
    cannot leave that range, and with two seeds mean +- 12.7 sd / sqrt(2) easily would."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None, "sd": None, "clipped": False}
    mean = statistics.fmean(values)
    if n < 2:
        return {"n": 1, "mean": mean, "low": None, "high": None, "sd": None, "clipped": False}
    sd = statistics.stdev(values)
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    clipped = bound is not None and (low < -bound or high > bound)
    if bound is not None:
        low, high = max(low, -bound), min(high, bound)
    return {"n": n, "mean": mean, "low": low, "high": high, "sd": sd, "clipped": clipped}


def verdict(interval: dict[str, Any], expect: int) -> str:
    """Whether the interval of a difference sides with the paper (``expect`` the sign it claims)."""
    if interval["n"] == 0:
        return "no runs"
    if interval["low"] is None:
        return "interval cannot be computed (1 seed)"
    if expect == 0:
        return "no sign claimed"
    if interval["low"] > 0 or interval["high"] < 0:
        return "agrees" if (interval["low"] > 0) == (expect > 0) else "disagrees"
    return "cannot tell"


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test: under "both models are equally good", each of the b + c images
    that exactly one of them gets right is a fair coin, so min(b, c) ~ Binomial(b + c, 1/2). p = min(1, 2 P(X <=
    min(b, c))), computed with integers (exact for any n)."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be >= 0, got {b}, {c}")
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_interval(b: int, c: int, n: int, z: float = 1.959964) -> dict[str, float]:
    """The difference of two error rates measured on the same ``n`` images, other minus reference, in points,
    with its 95% interval: b images only the reference gets right, c only the other. The difference is
    (b - c) / n; its standard error sqrt(b + c - (b - c)^2 / n) / n is that of a mean of paired +1/0/-1 scores
    (Wald's, for paired proportions). It says how far apart the two trained models are on these images; a new
    seed's spread is the t-interval's question."""
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n, n > 0; got b={b}, c={c}, n={n}")
    diff = (b - c) / n
    half = z * math.sqrt(max(0.0, b + c - (b - c) ** 2 / n)) / n
    return {"mean": 100.0 * diff, "low": 100.0 * (diff - half), "high": 100.0 * (diff + half)}


def pack_bits(flags: list[bool]) -> str:
    """Per-image right/wrong as hex (4 images a digit), so a run's record stays small with 10,000 test images."""
    text = "".join("1" if f else "0" for f in flags)
    text += "0" * (-len(text) % 4)
    return "".join(f"{int(text[i : i + 4], 2):x}" for i in range(0, len(text), 4))


def unpack_bits(hex_text: str, n: int) -> list[bool]:
    """The inverse of `pack_bits` for ``n`` images."""
    bits = "".join(f"{int(ch, 16):04b}" for ch in hex_text)
    if len(bits) < n:
        raise ValueError(f"{len(bits)} bits recorded, {n} images expected")
    return [b == "1" for b in bits[:n]]


def discordant(reference: list[bool], other: list[bool]) -> tuple[int, int]:
    """(images only ``reference`` gets right, images only ``other`` gets right): McNemar's b and c."""
    if len(reference) != len(other):
        raise ValueError(f"different image counts: {len(reference)} and {len(other)}")
    b = sum(1 for r, o in zip(reference, other) if r and not o)
    c = sum(1 for r, o in zip(reference, other) if o and not r)
    return b, c


MIN_CHANCE_SAMPLES = 200  # binomial sd of an error near 2/3 over 200 images: 3.3 points, under the 5 % margin


def diverged_reason(
    curve: list[dict[str, Any]], num_classes: int, near: float = 0.95, samples: int | None = None
) -> str | None:
    """Why a run counts as diverged, or None. Diverged: a training loss that is not finite, or a training error
    still near chance after the first epoch (at least ``near`` x chance's 1 - 1/C in the last epoch, when the run
    has two or more). A run that never learned says nothing about the idea it tests; averaging it in would make
    an interval that measures the accident, not the idea. The chance rule needs an epoch of at least
    `MIN_CHANCE_SAMPLES` training images (``samples``): over fewer, an epoch's training error (dropout and
    augmentation on) swings by more than the 5 % that separates "near chance" from learning."""
    for p in curve:
        if not math.isfinite(float(p["train_loss"])):
            return f"training loss not finite at epoch {p['epoch']}"
    if len(curve) >= 2 and num_classes >= 2 and (samples is None or samples >= MIN_CHANCE_SAMPLES):
        chance = 1.0 - 1.0 / num_classes
        last = curve[-1]
        if last["train_error"] >= near * chance:
            return (
                f"training error {last['train_error']:.1%} at epoch {last['epoch']}, near chance ({chance:.1%}) "
                "after the first epoch"
            )
    return None


def step_curve(trace: list[tuple[int, int, int, float]], windows_per_epoch: int = 20) -> list[dict[str, float]]:
    """Training error and loss against images seen, from the running totals of every step.

    ``trace``: (epoch, images so far in the epoch, correct so far, loss sum so far) after each step, as the
    training loop's totals give them. Each epoch is cut into about ``windows_per_epoch`` windows of consecutive
    steps; a point is the error over its window (not the epoch's running mean, which lags), placed at the images
    seen by the window's end."""
    by_epoch: dict[int, list[tuple[int, int, float]]] = {}
    for epoch, samples, correct, loss_sum in trace:
        by_epoch.setdefault(int(epoch), []).append((int(samples), int(correct), float(loss_sum)))
    out, before = [], 0
    for epoch in sorted(by_epoch):
        steps = by_epoch[epoch]
        width = max(1, math.ceil(len(steps) / windows_per_epoch))
        ends = list(range(width - 1, len(steps), width))
        if ends[-1] != len(steps) - 1:
            ends.append(len(steps) - 1)
        prev = (0, 0, 0.0)
        for j in ends:
            cur = steps[j]
            n = cur[0] - prev[0]
            if n > 0:
                out.append(
                    {
                        "epoch": epoch,
                        "images": before + cur[0],
                        "train_error": 1.0 - (cur[1] - prev[1]) / n,
                        "train_loss": (cur[2] - prev[2]) / n,
                    }
                )
            prev = cur
        before += steps[-1][0]
    return out


def images_to_threshold(points: list[dict[str, float]], threshold: float) -> int | None:
    """Images seen when a window's training error first is at or below ``threshold`` (Figure 1's x)."""
    for p in points:
        if p["train_error"] <= threshold:
            return int(p["images"])
    return None
