"""Load shedding: the share of new infer and explain requests refused while the event loop
runs late, set by a watch of the loop's lateness; health, metadata and metrics are never
refused."""

from __future__ import annotations

import asyncio
import random

from ..errors import Overloaded

_LOOP_TICK_S = 0.01
_MAX_SHED = 0.95  # some requests are always admitted, so work always gets done
# One loop check this many times later than the limit sheds at once (300 ms at the default
# 100 ms): far beyond a collection or a descheduled process (a few ms to tens of ms on the
# 2-core machines measured), so a short pause never sheds.
_STALL_FACTOR = 3.0


class LoadShedder:
    """The share of requests to refuse (``share``, read by the transports before anything
    else), the loop's last lateness, the worst since shedding began (what a refusal
    reports: the last check may well be on time while the share decays), and how many
    were refused."""

    def __init__(self) -> None:
        self.share = 0.0
        self.loop_delay_s = 0.0
        self.worst_delay_s = 0.0
        self.refused = 0  # mlserve_overload_rejections_total

    def shed_this(self) -> bool:
        """Whether load shedding refuses this request (only called while shedding)."""
        return random.random() < self.share

    def refuse(self) -> Overloaded:
        """The error for a request refused by load shedding (counted here)."""
        self.refused += 1
        return Overloaded(
            f"server overloaded: the event loop is running up to {self.worst_delay_s * 1e3:.0f} "
            "ms late; retry later"
        )

    async def watch(self, limit_s: float) -> None:
        """A loop that runs late has more work ready than it can do: every request accepted
        now waits behind it. Every 10 ms, see how late the loop woke us. Beyond ``limit_s``
        (two checks in a row, or one check later than ``_STALL_FACTOR`` times it) the share
        refused (503, far cheaper than serving) grows by 10 points a check, up to 95 %; once
        the loop is back under half the limit it falls by a fifth a check, to none within
        ~0.2 s. A share, not an on/off switch: clients that retry at once would otherwise
        keep the loop busy with refusals alone and nothing would be served."""
        loop = asyncio.get_running_loop()
        was_late = False
        while True:
            due = loop.time() + _LOOP_TICK_S
            await asyncio.sleep(_LOOP_TICK_S)
            late = max(0.0, loop.time() - due)
            self.loop_delay_s = late
            share = self.share
            if (share == 0.0 and not was_late) or late > self.worst_delay_s:
                self.worst_delay_s = late  # a fresh episode starts from this check
            if late > limit_s:
                # One late check alone is a pause (a collection, a descheduled process),
                # not a backlog: shedding starts on the second in a row. One stall of
                # several times the limit is no pause: every request that arrived during
                # it is waiting behind it, so it counts at once.
                if was_late or share > 0 or late > _STALL_FACTOR * limit_s:
                    share = min(_MAX_SHED, share + 0.1)
                was_late = True
            else:
                was_late = False
                if late < limit_s / 2:
                    share = share * 0.8 if share > 0.01 else 0.0
            self.share = share
