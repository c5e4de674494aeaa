"""What a run is given from outside, so tests can swap it: the clocks, sleep, the environment,
the streams and what people see (httpie's Environment), and the progress snapshots it reports."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from provisioner.vocabulary import Status

Clock = Callable[[], float]  # seconds: time.monotonic, time.time, a test's own
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Progress:
    """A snapshot of a run, for progress bars and plain progress lines."""

    done: int
    total: int
    counts: Mapping[Status, int]
    requests: int
    elapsed: float
    throttled: int = 0
    rate: float | None = None
    concurrency: int = 0
    stopped: bool = False


@dataclass
class Runtime:
    """What tests replace: sleeping, the clocks, the environment, streams, what people see."""

    sleep: Sleep | None = None  # None: a real sleep that a stop interrupts
    clock: Clock = time.monotonic
    wall_clock: Clock = time.time
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    say: Callable[[str], None] = lambda line: None
    progress: Callable[[Progress], None] = lambda progress: None
    stderr_isatty: bool = False
    stdin: BinaryIO | None = None
    jitter: random.Random = field(default_factory=random.Random)  # the backoff's random draws
