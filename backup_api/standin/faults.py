"""The stand-in's faults: what a test may arm (FaultSchema), the queue of armed faults per (namespace,
partner, route), and how an armed fault plays out around the store call it falls on.

A fault falls on a route: `events` (POST /player-events), `vip` (PUT of a VIP flag) or `reads`
(GET of events or of a flag). Faults armed for the same partner and route queue in order: the first
plays until its count is used up, then the next. With `probability`, each request it could fall on
draws (from a generator seeded by `seed`, when given, so that a run repeats), and only a request
drawn uses up its count.
"""

import random
import threading
import time
from collections import deque
from contextlib import contextmanager
from decimal import Decimal

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.exceptions import TooManyRequests

from backup_api import storage

FAULTS = ("503", "429", "500", "reset-before-commit", "drop-after-commit", "delay")
ROUTES = ("events", "vip", "reads")
# Faults answered with a status, and those of them that say when to retry.
ANSWERED = {"503": "the backup store is unavailable; nothing was stored, retry later",
            "429": "too many requests; nothing was stored, retry later",
            "500": "an internal error; nothing was stored"}
RETRIED = ("503", "429")
MAX_FAULT_COUNT = 10_000
MAX_DELAY_SECONDS = 60
MAX_RETRY_AFTER = 3600
# Faults armed at once per partner and route.
MAX_ARMED = 100


class DropConnection(Exception):
    """Close the connection without an answer; new: what became of each event, when they were committed."""

    def __init__(self, fault: str, new: list[bool] | None = None):
        super().__init__(fault)
        self.fault = fault
        self.new = new


class InjectedFault(storage.StorageError):
    """A fault answered with a status (503, 429, 500): as an outage is answered, but logged as what it is."""

    def __init__(self, status: int, message: str, retry_after: int | None = None, fault: str | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.fault = fault or str(status)  # the fault that played, as the journal names it


class JSONNumber(fields.Field):
    """A JSON number (never a string nor a boolean), as a float, or an int when whole is True."""

    def __init__(self, whole: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.whole = whole

    def _deserialize(self, value, attr, data, **kwargs):
        # The strict reader turns every JSON number into a Decimal, and nothing else into one.
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValidationError("Must be a JSON number.")
        if self.whole:
            if value != value.to_integral_value():
                raise ValidationError("Must be a whole number.")
            return int(value)
        return float(value)


class Seconds(fields.Field):
    """A delay: a number of seconds, or a range of two (in either order), each within (0, MAX_DELAY_SECONDS]."""

    _number = JSONNumber(validate=validate.Range(min=0, max=MAX_DELAY_SECONDS, min_inclusive=False))

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            return (self._number.deserialize(value),) * 2
        if len(value) != 2:
            raise ValidationError("Must be a number, or a range [least, most].")
        return tuple(sorted(self._number.deserialize(item) for item in value))


class FaultSchema(Schema):
    """The body of POST /_stand-in/faults."""

    fault = fields.String(required=True, validate=validate.OneOf(FAULTS))
    count = JSONNumber(whole=True, load_default=1, validate=validate.Range(min=1, max=MAX_FAULT_COUNT))
    seconds = Seconds()
    route = fields.String(load_default="events", validate=validate.OneOf(ROUTES))
    retry_after = JSONNumber(whole=True, validate=validate.Range(min=0, max=MAX_RETRY_AFTER))
    probability = JSONNumber(load_default=1.0, validate=validate.Range(min=0, max=1, min_inclusive=False))
    seed = JSONNumber(whole=True, validate=validate.Range(min=0, max=2**63 - 1))

    class Meta:
        unknown = RAISE

    @validates_schema
    def fits_the_fault(self, data, **kwargs):
        if (data.get("fault") == "delay") != ("seconds" in data):
            raise ValidationError({"seconds": ["Required with the delay fault, and with it only."]})
        if "retry_after" in data and data.get("fault") not in RETRIED:
            raise ValidationError({"retry_after": ["Only with the 503 and 429 faults."]})


class Fault:
    """An armed fault: what it does, how many more requests it falls on, and its draws."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.count = spec["count"]
        self._random = random.Random(spec.get("seed"))

    def draw(self) -> bool:
        """Tell whether it falls on this request (always, without a probability below 1)."""
        return self.spec["probability"] >= 1 or self._random.random() < self.spec["probability"]

    def seconds(self) -> float:
        least, most = self.spec["seconds"]
        return least if least == most else self._random.uniform(least, most)

    def shown(self, partner_id: str) -> dict:
        """The fault as GET /_stand-in/faults lists it, its count being what is left of it."""
        shown = {"partner_id": partner_id, **self.spec, "count": self.count}
        if "seconds" in shown:
            least, most = shown["seconds"]
            shown["seconds"] = least if least == most else [least, most]
        return shown


class Faults:
    """The armed faults, by (namespace, partner, route), each key's queue in the order they were armed."""

    def __init__(self, most: int = 10_000):
        self._lock = threading.Lock()
        self._armed: dict[tuple[str, str, str], deque[Fault]] = {}
        self._most = most  # faults armed at once, over every queue (BACKUP_API_STAND_IN_FAULTS)
        self._count = 0

    def arm(self, keys, spec: dict) -> None:
        """Queue the fault spec for each (namespace, partner) of keys, behind those armed already."""
        with self._lock:
            for key in keys:
                queue = self._armed.setdefault((*key, spec["route"]), deque())
                if len(queue) >= MAX_ARMED:
                    raise ValidationError({"fault": [f"{MAX_ARMED} faults are armed already for this partner and"
                                                      " route: clear them first"]})
            if self._count + len(keys) > self._most:
                for key in keys:  # the queues made empty above
                    if not self._armed[(*key, spec["route"])]:
                        del self._armed[(*key, spec["route"])]
                raise TooManyRequests(f"{self._count} faults are armed, and {len(keys)} more would pass the"
                                      f" stand-in's bound of {self._most} (BACKUP_API_STAND_IN_FAULTS): clear some"
                                      " first")
            for key in keys:
                self._armed[(*key, spec["route"])].append(Fault(spec))
            self._count += len(keys)

    def take(self, keys, route: str) -> Fault | None:
        """The fault falling on a request of route for keys (the first key with one), its count used up by one."""
        if not self._armed:  # none anywhere: no lock taken
            return None
        with self._lock:
            for key in sorted(keys):
                queue = self._armed.get((*key, route))
                if queue and queue[0].draw():
                    fault = queue[0]
                    fault.count -= 1
                    if fault.count == 0:
                        queue.popleft()
                        self._count -= 1
                        if not queue:
                            del self._armed[(*key, route)]
                    return fault
        return None

    def armed(self, keys) -> list[dict]:
        """What is armed for keys: each fault, in order, by partner then route."""
        with self._lock:
            return [fault.shown(partner) for (ns, partner, route), queue in sorted(self._armed.items())
                    if (ns, partner) in keys for fault in queue]

    def keys(self) -> set[tuple[str, str]]:
        """The (namespace, partner) pairs with a fault armed."""
        with self._lock:
            return {armed[:2] for armed in self._armed}

    def clear(self, keys=None) -> None:
        """Disarm the faults of keys (of everyone, when None)."""
        with self._lock:
            for armed in list(self._armed):
                if keys is None or armed[:2] in keys:
                    self._count -= len(self._armed.pop(armed))


class DelaySlots:
    """At most `slots` delayed answers held at once, so that a delay never starves the other requests."""

    def __init__(self, slots: int):
        self.slots = slots
        self._free = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self):
        """Hold one slot while the block runs; none free: refuse (503) at once."""
        if not self._free.acquire(blocking=False):
            raise InjectedFault(503, f"the stand-in holds {self.slots} delayed answers already (at most half its"
                                " threads); this request was refused rather than delayed, and nothing was stored",
                                retry_after=1, fault="delay")
        try:
            yield
        finally:
            self._free.release()


def play(fault: Fault | None, call, delays: DelaySlots, events: bool = False):
    """Make the store call with fault around it: before it (nothing done), or after it (done, late or unanswered)."""
    if fault is None:
        return call()
    name = fault.spec["fault"]
    if name in ANSWERED:
        retry_after = fault.spec.get("retry_after", 1) if name in RETRIED else None
        raise InjectedFault(int(name), ANSWERED[name], retry_after)
    if name == "reset-before-commit":
        raise DropConnection(name)
    if name == "delay":
        with delays.slot():
            done = call()
            time.sleep(fault.seconds())
        return done
    done = call()
    raise DropConnection(name, done if events else None)
