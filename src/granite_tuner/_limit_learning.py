"""What a `RateLimiter` knows about the service's limit, and how answers change it.

Kept apart from the limiter's waiting so that it is plain synchronous code, driven by the
times it is given (tests run it on a clock of their own). The limiter asks `Learner.model()`
for the limit in force (``count`` requests per ``period`` seconds, before the margin) and
reports every answer. The evidence, and what each piece may change:

- ``told``: the caller's `requests_per_second`; never exceeded.
- ``header``: ``x-requests-limit-rate`` from the service.
- ``remaining``: the smallest ``x-requests-limit-remaining`` + our own recent sends (seen
  twice); raised by one after `RAISE_AFTER` seconds without a figure that low (the limit may
  have grown, or another client may have stopped sharing it), and by half when a request sent
  early after the service said it was full got through (it refills faster than a window).
- ``learned``: from 429s; probed one higher after a quiet spell that doubles after each
  probe that failed.

The most restrictive wins. A 429 tightens at most once per window, and each tightening is
checked one window (plus a latency) later: if 429s did not get rarer, it is undone and their
share is kept as background ``noise``, below which bare 429s are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["INITIAL_ALLOWANCE", "Learner", "LimitModel", "model_from_rate"]

Source = Literal["told", "header", "remaining", "learned", "initial"]
_PRIORITY: dict[Source, int] = {"told": 0, "header": 1, "remaining": 2, "learned": 3, "initial": 4}

# Until the first answer, this many requests per second: the smallest watsonx.ai plan's limit.
INITIAL_ALLOWANCE = 2
# A remaining-based estimate creeps up by one after this many seconds with none as low.
RAISE_AFTER = 30.0
# A figure below the one held must be seen twice within this many seconds.
CONFIRM_WITHIN = 3.0
# Probing a learned limit: first after this long, doubling after each failed probe.
PROBE_AFTER = 2.0
MAX_PROBE_AFTER = 32.0
# A service that says it is full may refill faster than a window (a token bucket with a
# small burst): one request sent soon after tests that. Tried in our first window, after a
# probe that got through, and otherwise this long after the last failed one (doubling).
REFILL_PROBE_AFTER = 30.0
MAX_REFILL_PROBE_AFTER = 300.0
# A 429 within the limit widens the margin by this much (doubling), up to the cap; the extra
# halves after each `MARGIN_DECAY` seconds without such a 429.
MARGIN_STEP = 0.02
MAX_EXTRA_MARGIN = 0.25
MARGIN_DECAY = 10.0
# The most one tightening lowers a learned limit (a share of it).
MAX_DECREASE = 0.3
# Answers needed before a bare 429 may act, and before a tightening is judged.
MIN_EVIDENCE = 5
# A tightening after which 429s kept at least this share of their rate is undone.
NO_BETTER = 0.8
# Seconds of history below which the admitted count covers less than a second.
_MIN_SPAN = 0.05


@dataclass(frozen=True)
class LimitModel:
    """At most ``count`` requests per ``period`` seconds (the window, before the margin)."""

    count: int
    period: float
    source: Source


def model_from_rate(rate: float, source: Source) -> LimitModel:
    """A rate as a whole count per window: ``floor(rate)`` a second, or one per ``1/rate``."""
    count = max(1, math.floor(rate + 1e-9))
    return LimitModel(count, max(1.0, count / rate), source)


@dataclass(frozen=True)
class _Settings:
    """What a tightening changes, so that it can be undone."""

    learned: int | None
    extra_margin: float
    burst_cap: int | None


@dataclass
class _Check:
    """A tightening being judged: the 429 share before it and the answers since."""

    at: float
    share: float
    before: _Settings
    ok: int = 0
    rejected: int = 0


class Learner:
    """The evidence about the service's limit, and the decisions taken on it."""

    def __init__(self, told: float | None) -> None:
        self.told = told
        self.rate_header: float | None = None
        self.estimate: int | None = None
        self.learned: int | None = None
        self.extra_margin = 0.0
        self.burst_cap: int | None = None
        self.noise = 0.0
        self._estimate_low_at = -math.inf
        self._unconfirmed: tuple[float, int] | None = None  # (when, figure) seen once
        self._widened_at = -math.inf
        self._changed_at = -math.inf
        self._probe_after = PROBE_AFTER
        self._held_back_at = -math.inf
        self._refill_probe_at: float | None = None  # None: from the first answer on
        self._refill_probe_after = REFILL_PROBE_AFTER
        self._next_decision = -math.inf
        self._period_ok = 0
        self._period_rejected = 0
        self._check: _Check | None = None

    # --- the limit in force ---------------------------------------------------------------

    def model(self, *, initial: bool) -> LimitModel | None:
        """The most restrictive limit known; ``initial`` means no answer came back yet."""
        candidates: list[LimitModel] = []
        if self.told is not None:
            candidates.append(model_from_rate(self.told, "told"))
        if self.rate_header is not None:
            candidates.append(model_from_rate(self.rate_header, "header"))
        if self.estimate is not None:
            candidates.append(LimitModel(max(1, self.estimate), 1.0, "remaining"))
        if self.learned is not None:
            candidates.append(LimitModel(self.learned, 1.0, "learned"))
        if not candidates:
            return LimitModel(INITIAL_ALLOWANCE, 1.0, "initial") if initial else None
        return min(candidates, key=lambda m: (m.count / m.period, _PRIORITY[m.source]))

    def burst_now(self, burst: int | None, count: int) -> int:
        """How many requests may leave together: the caller's burst, a window, or less."""
        allowed = count if burst is None else min(burst, count)
        if self.burst_cap is not None:
            allowed = min(allowed, self.burst_cap)
        return max(1, allowed)

    def note_held_back(self, now: float) -> None:
        """A request had to wait for the pacing: the limit is what holds us back."""
        self._held_back_at = now

    # --- evidence -----------------------------------------------------------------------

    def on_remaining(self, now: float, estimate: int, *, fresh: bool) -> None:
        """An answer implied the limit is ``estimate`` requests a second (or more).

        The smallest figure is kept, but a figure below the one held needs a second as low
        within `CONFIRM_WITHIN` seconds: a request that reached the service late is counted in
        two of its windows, and once is no pattern. ``fresh`` figures (from requests sent
        within our first window, with nothing earlier to miscount) count at once. Ignored
        when told the rate: the caller's figure stands, and 429s correct it.
        """
        if self.told is not None:
            return
        if self.estimate is None or estimate < self.estimate:
            low = self._unconfirmed
            if self.estimate is None or fresh:
                self.estimate = estimate
            elif low is not None and now - low[0] <= CONFIRM_WITHIN:
                self.estimate = max(low[1], estimate)  # the higher of two low figures
            else:
                self._unconfirmed = (now, estimate)
                return
            self._estimate_low_at = now
            self._unconfirmed = None
        elif estimate == self.estimate:
            self._estimate_low_at = now
        elif now - self._estimate_low_at > RAISE_AFTER:
            self.estimate += 1
            self._estimate_low_at = now

    def on_full(self, now: float, *, fresh: bool) -> bool:
        """The service said it has no room left. Returns whether to probe its refill."""
        if self.told is not None or self.rate_header is not None:
            return False
        if self._refill_probe_at is None:
            self._refill_probe_at = now + self._refill_probe_after
        return fresh or now >= self._refill_probe_at

    def on_refill_probe(self, now: float, *, admitted: bool, model: LimitModel | None) -> None:
        """A probe sent soon after the service said it was full came back."""
        if not admitted:
            self._refill_probe_after = min(MAX_REFILL_PROBE_AFTER, 2 * self._refill_probe_after)
            self._refill_probe_at = now + self._refill_probe_after
            return
        # It refills faster than we thought: raise what held us, and probe again when full.
        self._refill_probe_at = now
        if model is None:
            return
        raised = max(model.count + 1, math.ceil(model.count * 1.5))
        if model.source == "remaining":
            self.estimate = raised
            self._estimate_low_at = now
            self._unconfirmed = None
        elif model.source == "learned":
            self.learned = raised
            self._changed_at = now

    def on_answer(self, sent_at: float, status: int) -> None:
        """Count an answer for the current period and for the tightening being judged."""
        limited = status == 429
        self._period_rejected += limited
        self._period_ok += not limited
        check = self._check
        if check is not None and sent_at >= check.at:
            check.rejected += limited
            check.ok += not limited

    def on_success(self, now: float, *, model: LimitModel | None, window: float) -> None:
        """A request got through: let the margin relax and a learned limit probe upwards."""
        if self.extra_margin > 0 and now - self._widened_at > MARGIN_DECAY:
            self.extra_margin = 0.0 if self.extra_margin < 0.005 else self.extra_margin / 2
            self._widened_at = now
        if (
            model is not None
            and model.source == "learned"
            and self.learned is not None
            and self._check is None
            and now - self._changed_at >= self._probe_after
            and now - self._held_back_at < window
        ):
            self.learned += 1
            self._changed_at = now
            # A probe that held for its whole interval makes the next one come sooner.
            self._probe_after = max(PROBE_AFTER, self._probe_after / 2)

    def on_rate_limited(
        self,
        now: float,
        *,
        admitted: int,
        young: bool,
        says_empty: bool,
        explained: bool,
        in_burst: bool,
        history: float,
        model: LimitModel | None,
        window: float,
    ) -> bool:
        """A 429 (already counted by `on_answer`). Returns whether the pacing was tightened.

        ``admitted``: our requests the service admitted in the second before the refused one
        left; ``young``: the log reaches back less than a second then; ``says_empty``: the
        answer said ``x-requests-limit-remaining: 0``; ``explained``: it carried that header
        or a ``Retry-After`` (a bare 429 has neither); ``history``: seconds of log now.
        """
        if now < self._next_decision or self._check is not None:
            return False
        answered = self._period_ok + self._period_rejected
        share = self._period_rejected / answered if answered else 1.0
        if not explained:
            if answered < MIN_EVIDENCE:
                return False  # wait for more answers before reading anything into it
            if share <= self.noise * 1.5 + 0.02:
                self._new_period(now, window)  # no more 429s than the service's background
                return False
        before = _Settings(self.learned, self.extra_margin, self.burst_cap)
        self._tighten(now, admitted, young and not says_empty, in_burst, history, model)
        self._check = _Check(at=now, share=share, before=before)
        self._new_period(now, window)
        return True

    def _tighten(
        self,
        now: float,
        admitted: int,
        extrapolate: bool,
        in_burst: bool,
        history: float,
        model: LimitModel | None,
    ) -> None:
        if in_burst and model is not None:
            self.burst_cap = max(1, self.burst_now(None, model.count) // 2)
        if model is None or model.source == "initial":
            # Nothing known: the service admitted this many in the last second. A log younger
            # than a second (and no word that the service is empty) scales up to one.
            count = admitted
            if extrapolate:
                count = math.ceil(admitted / max(_MIN_SPAN, min(1.0, history)))
            self.learned = max(1, count)
            self._changed_at = now
            self._probe_after = PROBE_AFTER
        elif model.source == "learned":
            self.learned = self._lowered(model.count, admitted if admitted < model.count else None)
            self._changed_at = now
            self._probe_after = min(MAX_PROBE_AFTER, self._probe_after * 2)
        elif admitted <= model.count - 2:
            # Told (or shown) a limit, but the service refused well below it: someone else
            # shares it, or it is lower than said. Hold to what it admitted.
            self.learned = self._lowered(model.count, admitted)
            self._changed_at = now
        else:
            # Within the limit and still refused: arrivals bunch more than the margin allows.
            self.extra_margin = min(MAX_EXTRA_MARGIN, max(MARGIN_STEP, 2 * self.extra_margin))
            self._widened_at = now

    @staticmethod
    def _lowered(count: int, admitted: int | None) -> int:
        """One step down from ``count``: to what the service admitted, but by at most
        `MAX_DECREASE` of it at once (a 429 while few requests were wanted says little)."""
        floor = max(1, math.floor(count * (1 - MAX_DECREASE)))
        target = count - 1 if admitted is None else admitted
        return max(floor, min(count - 1, target), 1)

    def review(self, now: float, *, window: float, latency: float) -> bool:
        """Judge the pending tightening once its effect can be seen. Returns True if undone."""
        check = self._check
        if check is None or now < check.at + window + latency:
            return False
        answered = check.ok + check.rejected
        if answered < MIN_EVIDENCE and now < check.at + 10 * window + latency:
            return False
        self._check = None
        share = check.rejected / answered if answered else 0.0
        # One stray 429 since is no pattern: it takes two to call a tightening useless.
        if answered >= MIN_EVIDENCE and check.rejected >= 2 and share >= NO_BETTER * check.share:
            # 429s did not get rarer: they do not follow our pace. Undo, and remember them.
            self.learned = check.before.learned
            self.extra_margin = check.before.extra_margin
            self.burst_cap = check.before.burst_cap
            self.noise = share
            return True
        self.noise /= 2
        return False

    def _new_period(self, now: float, window: float) -> None:
        self._next_decision = now + window
        self._period_ok = 0
        self._period_rejected = 0
