"""Per-model admission and dynamic batching, inside one worker process. No Flask in here.

Admission. Each model admits at most `limit` requests at a time: from before the
upload is decoded until the answer is ready. The next one is refused at once with
ServerBusy (a 503 with Retry-After), before any work is spent on it. So a crowd of
Xception photos can hold at most that many of a worker's threads, the rest stay free
for digits and pages, and everyone admitted waits a bounded time: a "classroom at
once" gets quick answers or a quick "busy, retry in N s", never a timeout.

Batching. Requests that reach a model while it is busy with another call are run
together in its next call, up to `max_batch` rows (TF Serving and Triton do the same).
There is no model thread: the first caller to find the model idle runs it, so a lone
request pays nothing for the machinery and never waits for a batch to fill. When a
call ends, the oldest waiting caller runs the next batch, which holds its own input
and every other one waiting, so no caller ever runs more than one batch. A leader
waits up to `max_wait` seconds for more inputs only while other admitted requests are
still decoding on their way to this model. Every caller gets exactly the rows of its
own input back.
"""

import contextvars
import logging
import math
import threading
import time
from collections import deque
from contextlib import contextmanager

import numpy as np

log = logging.getLogger(__name__)


class ServerBusy(RuntimeError):
    """A model's queue is full; `retry_after` is the advised wait in whole seconds."""

    def __init__(self, model, in_flight, retry_after):
        what = WHAT_EACH_MODEL_READS.get(model, f"{model} requests")
        super().__init__(
            f"the server is busy: it is already recognising as many {what} as it takes at once "
            f"({in_flight}); try again in {retry_after} s")
        self.model, self.retry_after = model, retry_after


# How a person would name what a model's requests are, for the busy message.
WHAT_EACH_MODEL_READS = {"dense": "digits", "cnn": "digits", "xception": "photos"}


class Admission:
    """At most `limit` requests for one model at a time in this process; the rest refused."""

    def __init__(self, model, limit, seconds_per_request):
        self.model, self.limit = model, limit
        self.seconds_per_request = seconds_per_request  # for Retry-After; batchers refine it
        self.in_flight = 0  # admitted and not yet answered
        self.on_the_way = 0  # admitted and not yet at the model (decoding, preparing)
        self.shed = 0  # refused since the process started
        self._lock = threading.Lock()

    @contextmanager
    def admitted(self):
        """Hold one of the model's places for the duration; raises ServerBusy when none is free."""
        with self._lock:
            if self.in_flight >= self.limit:
                self.shed += 1
                shed, in_flight = self.shed, self.in_flight
            else:
                shed = None
                self.in_flight += 1
                self.on_the_way += 1
        if shed is not None:
            retry_after = self.retry_after(in_flight)
            log.warning("shed a %s request: %d in flight, the limit; %d shed so far; Retry-After %d s",
                        self.model, in_flight, shed, retry_after)
            raise ServerBusy(self.model, in_flight, retry_after)
        ticket = _Ticket(self)
        token = _current_ticket.set(ticket)
        try:
            yield
        finally:
            _current_ticket.reset(token)
            with self._lock:
                self.in_flight -= 1
                if not ticket.arrived:
                    self.on_the_way -= 1

    def retry_after(self, in_flight=None):
        """Whole seconds until the requests in flight are likely answered; at least 1."""
        waiting = self.in_flight if in_flight is None else in_flight
        return max(1, math.ceil(waiting * self.seconds_per_request))

    def full(self):
        return self.in_flight >= self.limit

    def arrived(self):
        """The current request has reached this model: it is no longer on its way."""
        ticket = _current_ticket.get(None)
        if ticket is not None and ticket.admission is self and not ticket.arrived:
            with self._lock:
                ticket.arrived = True
                self.on_the_way -= 1

    def state(self):
        return {"in_flight": self.in_flight, "limit": self.limit, "shed": self.shed}


class _Ticket:
    __slots__ = ("admission", "arrived")

    def __init__(self, admission):
        self.admission, self.arrived = admission, False


_current_ticket = contextvars.ContextVar("admission_ticket")


class _Call:
    """One caller's input, and then its output or error."""

    __slots__ = ("inputs", "outputs", "error", "turn", "leads")

    def __init__(self, inputs):
        self.inputs = inputs
        self.outputs = self.error = None
        self.turn = threading.Event()  # set when answered, or when it is this caller's turn to lead
        self.leads = False


class DynamicBatcher:
    """`model`, called by many threads at once, with their inputs run together (see above).

    Looks like the model it wraps (input_shape, keras_model, warm_up) to its callers.
    """

    def __init__(self, model, max_batch, max_wait=0.0, admission=None):
        self.model = model
        self.max_batch, self.max_wait = max_batch, max_wait
        self.admission = admission
        self.batches = self.rows = 0  # calls made and rows run, for the benchmark and tests
        self._pending = deque()
        self._running = False
        self._changed = threading.Condition(threading.Lock())

    def __getattr__(self, name):  # input_shape, keras_model, warm_up, ...
        return getattr(self.model, name)

    def __call__(self, batch):
        """float32 batch shaped like the model's input -> this batch's outputs."""
        call = _Call(np.asarray(batch, dtype=np.float32).reshape((-1, *self.model.input_shape)))
        if self.admission is not None:
            self.admission.arrived()
        with self._changed:
            self._pending.append(call)
            if self._running:
                self._changed.notify()  # a leader may be waiting for more inputs
            else:
                self._running = call.leads = True
        if not call.leads:
            call.turn.wait()
        if call.leads:
            self._run_next_batch()
        if call.error is not None:
            raise call.error
        return call.outputs

    def _run_next_batch(self):
        """Run the oldest waiting inputs (this caller's first) together; then pass the lead on."""
        with self._changed:
            if self.max_wait and self.admission is not None:
                deadline = time.monotonic() + self.max_wait
                while (self.admission.on_the_way > 0 and self._rows_pending() < self.max_batch
                       and self._changed.wait(max(0.0, deadline - time.monotonic()))):
                    pass
            calls, rows = [], 0
            while self._pending and (not calls or rows + len(self._pending[0].inputs) <= self.max_batch):
                calls.append(self._pending.popleft())
                rows += len(calls[-1].inputs)
        try:
            self._run(calls, rows)
        finally:  # whatever happened, the callers in the batch are answered and the lead moves on
            with self._changed:
                if self._pending:
                    self._pending[0].leads = True
                    self._pending[0].turn.set()
                else:
                    self._running = False
            for call in calls[1:]:  # calls[0] is this thread's own
                call.turn.set()

    def _run(self, calls, rows):
        """Run `calls` as one model call and give each its own rows, or every one the error."""
        started = time.monotonic()
        try:
            inputs = calls[0].inputs if len(calls) == 1 else np.concatenate([c.inputs for c in calls])
            outputs = self.model(inputs)
            if len(outputs) != rows:  # slicing would hand callers short or foreign rows
                raise RuntimeError(f"the model answered {len(outputs)} rows for a batch of {rows}")
            start = 0
            for call in calls:
                call.outputs = outputs[start:start + len(call.inputs)]
                start += len(call.inputs)
        except Exception as exc:
            if len(calls) == 1:
                calls[0].outputs, calls[0].error = None, exc
            else:  # one caller's input may be the cause: each runs again alone, and only its own fails
                for call in calls:
                    self._run([call], len(call.inputs))
                return
        except BaseException as exc:  # every caller in the batch hears it, and the lead moves on
            for call in calls:
                call.outputs, call.error = None, exc
        self._note(time.monotonic() - started, len(calls), rows)

    def _rows_pending(self):
        return sum(len(call.inputs) for call in self._pending)

    def _note(self, seconds, requests, rows):
        self.batches += 1
        self.rows += rows
        if self.admission is not None:  # a moving average of the model's time per request
            per_request = seconds / requests
            self.admission.seconds_per_request += 0.2 * (per_request - self.admission.seconds_per_request)
