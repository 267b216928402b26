"""Sample times computed from sample indices in integers.

A sample's time is ``start_ns + round(sample_index * 1e9 / sample_rate)`` ns, with the
rate taken as the exact fraction its float is (``100_000.0`` is 100000/1; ``44_100.0``
gives a period of 10**7 / 441 ns) and halves rounded up. Every time is computed from
its own index, never by adding periods: a sample has one time however the stream was
cut into blocks, writes and flushes (a writer that accumulates float periods drifts by
a nanosecond every few hundred thousand samples).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from daq_storage.errors import ConfigError, describe_value

__all__ = ["MAX_RATE", "MIN_RATE", "Timebase"]

_NS_PER_S = 10**9
_INT64_MAX = (1 << 63) - 1
#: Accepted sample rates (per second): one sample per ~11.6 days to one per ns.
MIN_RATE = 1e-6
MAX_RATE = 1e9


class Timebase:
    """Times (ns since the epoch, int64) of sample indices at ``sample_rate`` from
    ``start_ns``.

    Raises:
        ConfigError: a rate that is no finite number in ``[1e-6, 1e9]`` (a rate <= 0
            included), a ``start_ns`` that is no int in ``[0, 2**63)``.
    """

    def __init__(self, sample_rate: float, start_ns: int) -> None:
        rate = math.nan
        if not isinstance(sample_rate, bool):
            try:
                rate = float(sample_rate)
            except (TypeError, ValueError):
                rate = math.nan
        if not MIN_RATE <= rate <= MAX_RATE:  # NaN fails too
            raise ConfigError(f"sample_rate must be a number in [{MIN_RATE:g}, {MAX_RATE:g}] "
                              f"samples per second, got {describe_value(sample_rate)}")  # fmt: skip
        if isinstance(start_ns, bool) or not isinstance(start_ns, int | np.integer) \
                or not 0 <= int(start_ns) <= _INT64_MAX:  # fmt: skip
            raise ConfigError(f"start_ns must be an int in [0, 2**63) (ns since the epoch), "
                              f"got {describe_value(start_ns)}")  # fmt: skip
        self.sample_rate = rate
        self.start_ns = int(start_ns)
        period = Fraction(_NS_PER_S) / Fraction(rate)  # exact: a float is a binary fraction
        self._twice_num = 2 * period.numerator
        self._twice_den = 2 * period.denominator
        self._half = period.denominator

    def at(self, index: int) -> int:
        """The time of sample ``index`` (a Python int: exact for any index)."""
        return self.start_ns + (index * self._twice_num + self._half) // self._twice_den

    def times(self, first: int, n: int) -> npt.NDArray[np.int64]:
        """The times of samples ``first`` to ``first + n - 1``.

        Raises:
            ConfigError: a time past int64 (year 2262).
        """
        if n and self.at(first + n - 1) > _INT64_MAX:
            raise ConfigError(f"sample {first + n - 1} at {self.sample_rate:g} per second from "
                              f"start_ns {self.start_ns} is past the last time int64 ns "
                              f"hold (2262-04-11)")  # fmt: skip
        # time(first + k) = start + q0 + (r0 + k * 2num) // 2den with q0, r0 of first's
        # numerator; in int64 where every term fits, else in Python ints.
        q0, r0 = divmod(first * self._twice_num + self._half, self._twice_den)
        base = self.start_ns + q0
        if max(r0 + max(n - 1, 0) * self._twice_num, self._twice_num,
               self._twice_den) <= _INT64_MAX:  # fmt: skip
            steps = np.arange(n, dtype=np.int64)
            steps *= self._twice_num
            steps += r0
            steps //= self._twice_den
            steps += base
            return steps
        return np.fromiter(
            (base + (r0 + k * self._twice_num) // self._twice_den for k in range(n)),
            dtype=np.int64, count=n,
        )  # fmt: skip
