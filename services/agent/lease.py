"""A run's hold on the gateway's capacity: one run slot and one of its API key's concurrent runs."""

from __future__ import annotations

from services.access import Access, KeyRing
from services.limits import RunLimiter


class RunLease:
    """Taken where a run is opened (the key's run at once, the slot once the limiter grants it); given back once."""

    def __init__(self, limiter: RunLimiter, keys: KeyRing, access: Access | None) -> None:
        self._limiter = limiter
        self._keys = keys
        self._access = access
        self._slot = False

    @classmethod
    async def take(cls, limiter: RunLimiter, keys: KeyRing, access: Access | None, *, key_run: bool = True) -> RunLease:
        """A lease holding one of the key's runs (its `max_concurrent_runs`; none when not `key_run`)."""
        if access is not None and key_run:
            await keys.limits.enter_run(access)
            return cls(limiter, keys, access)
        return cls(limiter, keys, None)

    def hold_slot(self) -> None:
        """The run has taken a slot of the run limiter; `release` gives it back."""
        self._slot = True

    def leave_key(self) -> None:
        """Give the key's run back (idempotent): the run has ended."""
        if self._access is not None:
            access, self._access = self._access, None
            self._keys.limits.leave_run(access)

    def release(self) -> None:
        """Give the run slot and the key's run back (idempotent)."""
        self.leave_key()
        if self._slot:
            self._slot = False
            self._limiter.release()
