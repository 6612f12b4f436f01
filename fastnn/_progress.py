"""Keras-style progress output for fit: a bar redrawn a few times a second (verbose=1) or
one line per epoch (verbose=2)."""
import sys
import time


def can_encode(stream, text):
    """Whether writing `text` to `stream` is safe. A stream naming no encoding (io.StringIO)
    takes any str, as rich (Keras' summary) assumes. Tried on the text itself, not judged by
    the encoding's name: a code page such as cp437 holds "─" but not "━"."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _format_logs(logs):
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


def _format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


def _per_step(seconds, steps):
    per = seconds / max(steps, 1)
    return f"{per * 1e3:.0f}ms/step" if per >= 1e-3 else f"{per * 1e6:.0f}us/step"


REFRESH = 0.2  # seconds between writes to the stream, and between redraws of the bar


class Output:
    """A fit's output, written to the stream at most every REFRESH seconds. A write to a
    terminal costs about 20 us (two an epoch: its header and its line), which on epochs of
    half a millisecond (the course's network) was 9% of the fit; lines that arrive faster
    than the eye follows them go out together. `flush` before anything else may print."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.pending = []
        self.last_flush = float("-inf")

    def write(self, text, now=False):
        self.pending.append(text)
        t = time.perf_counter()
        if now or t - self.last_flush >= REFRESH:
            self.flush(t)

    def flush(self, t=None):
        if self.pending:
            self.stream.write("".join(self.pending))
            self.stream.flush()
            self.pending.clear()
        self.last_flush = time.perf_counter() if t is None else t


class Progress:
    """Prints one epoch's progress. `update` is called between chunks of compiled steps."""

    REFRESH = REFRESH  # seconds between redraws of the bar

    def __init__(self, verbose, epoch, epochs, steps, stream=None, chunk=1, out=None,
                 slow=True):
        self.verbose, self.steps = verbose, steps
        self.chunk = chunk  # compiled steps between redraws, tuned by the caller
        # without a fit's Output, every write goes out at once
        self.out = out or Output(stream)
        self.immediate = out is None
        self.stream = self.out.stream
        self.start = self.last_draw = time.perf_counter()
        self.width = len(str(steps))
        # An ASCII or cp1252 console, or a redirect under a C locale, cannot take the box
        # characters, and failing there would lose a trained epoch: fall back to ASCII, as
        # Keras does ("━" becomes "="). Decided once, not per redraw.
        self.full, self.empty = ("━", "─") if can_encode(self.stream, "━─") else ("=", "-")
        self.drawn = 0  # length of the line on screen, to blank what a shorter one leaves
        if verbose:
            # slow: the last epoch took a refresh or more, so this one's header shows at
            # once (verbose=2 writes nothing else until the epoch ends)
            self._write(f"Epoch {epoch + 1}/{epochs}\n", now=slow)

    def _write(self, text, now=False):
        self.out.write(text, now or self.immediate)

    def _redraw(self, text, end=""):
        # "\r" only moves the cursor back: a loss going from 12.3456 to 1.2345 would leave
        # the old line's last character behind. Keras pads the same way.
        # a redraw within the epoch is due (update draws every REFRESH): it goes out now
        self._write("\r" + text + " " * (self.drawn - len(text)) + end, now=not end)
        self.drawn = 0 if end else len(text)

    def _bar(self, done, logs):
        elapsed = time.perf_counter() - self.start
        filled = int(20 * done / max(self.steps, 1))
        bar = self.full * filled + self.empty * (20 - filled) if filled < 20 else self.full * 20
        if done < self.steps:
            eta = elapsed / max(done, 1) * (self.steps - done)
            timing = f"{_format_time(eta)}"
        else:
            timing = f"{_format_time(elapsed)} {_per_step(elapsed, self.steps)}"
        text = f"{done:>{self.width}}/{self.steps} {bar} {timing}"
        return text + (" - " + _format_logs(logs) if logs else "")

    def update(self, done, logs):
        """After `done` steps; redraws at most every REFRESH seconds."""
        if self.verbose != 1:
            return
        now = time.perf_counter()
        if now - self.last_draw >= self.REFRESH:
            self.last_draw = now
            self._redraw(self._bar(done, logs))

    def end(self, logs):
        if self.verbose == 1:
            self._redraw(self._bar(self.steps, logs), "\n")
        elif self.verbose == 2:
            elapsed = time.perf_counter() - self.start
            self._write(f"{self.steps}/{self.steps} - {_format_time(elapsed)} - "
                        f"{_per_step(elapsed, self.steps)} - {_format_logs(logs)}\n")
