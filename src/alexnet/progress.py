"""One way to show progress on every long command: a tqdm bar on a terminal, a plain line every few percent
otherwise (a log file gets no ``\\r`` bars), nothing with ``none``. The mode comes from
`alexnet.options.resolve_progress`."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO, TypeVar

from .options import resolve_progress

__all__ = ["Progress", "track"]

T = TypeVar("T")


class Progress:
    """Counts ``update(n)`` towards ``total``. ``log`` mode prints ``desc: done/total (pct%) rate eta`` each time
    another ``every`` percent is done (and at the end), so a 200 s evaluation says where it is ~10 times."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        mode: str = "auto",
        *,
        unit: str = "it",
        every: float = 10.0,
        stream: TextIO | None = None,
        initial: int = 0,
    ) -> None:
        self.mode = resolve_progress(mode)
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.stream = stream or sys.stderr
        self.n = initial
        self._n0 = initial
        self._t0 = time.perf_counter()
        self._next_pct = every
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=self.stream)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(**postfix)
        elif self.mode == "log" and self.total:
            pct = 100.0 * self.n / self.total
            if pct >= self._next_pct or self.n >= self.total:
                while self._next_pct <= pct:
                    self._next_pct += self.every
                self._line(pct, postfix)

    def _line(self, pct: float, postfix: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self._t0
        done = self.n - self._n0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 and self.total else 0.0
        extra = "".join(f" {k} {v}" for k, v in postfix.items())
        print(
            f"{self.desc}: {self.n}/{self.total} {self.unit} ({pct:.0f}%){extra} {rate:.1f} {self.unit}/s "
            f"eta {eta:.0f}s",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def track(
    items: Iterable[T], desc: str, mode: str = "auto", *, total: int | None = None, unit: str = "batch"
) -> Iterator[T]:
    """Iterate ``items`` while showing progress (`Progress`); ``total`` defaults to ``len(items)``."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    with Progress(total, desc, mode, unit=unit) as p:
        for item in items:
            yield item
            p.update(1)
