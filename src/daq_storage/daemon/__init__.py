"""The storage daemon: one long-running process that owns a ring and records it.

``daq-storage daemon`` (:func:`run_daemon`) does, in order:

1. takes the ring's single-instance lock: ``<ring>.daemon.lock`` beside the ring, held
   with ``flock`` for the daemon's life and holding its pid. A second daemon on the same
   ring is refused (:class:`~daq_storage.errors.RingBusy` naming the running one's pid);
   the kernel drops the lock when its holder dies, so a killed daemon blocks nobody.
2. creates the ring (seed 004) from ``[ring_buffer]``: at ``path``, else
   :func:`~daq_storage.config.daemon_ring_path` (``/dev/shm/daq_storage_<experiment>``,
   where producers and ``status`` find it from the same configuration); sized by
   ``size_mb`` (unset: 256 MiB, shrunk to what the tmpfs and the RAM allow) or by
   ``frames`` records of ``record_bytes`` each (default :data:`DEFAULT_RECORD_BYTES`,
   one frame of the simulated camera); with ``overflow`` and ``max_readers``
   (``block_timeout_secs`` is the producers': how long a writer waits is the writer's
   own setting, which ``daq-storage simulate --config`` reads). A ring left there by a
   daemon that was killed is *stale* (nobody holds the lock): its counters and its
   Recorder's last stats are logged, then it and that stats file are replaced. A ring
   a live process is attached to is never replaced.
3. starts the Recorder (:meth:`Recorder.from_config`, in its own process) as the ring's
   registered consumer, and only then lets producers attach as the ring's writer, so
   nothing a producer writes is missed. Logs ``ready``.
4. logs a ``progress`` line every ``progress_interval`` seconds from the Recorder's
   stats (records, MB/s, lag, lost, errors) and the ring (fill, producer attached);
   losses are warnings, errors and failed formats are errors.
5. on ``stop`` (SIGINT / SIGTERM in the CLI) stops the Recorder (it drains what is in
   the ring, flushes and closes every file), logs the summary and returns the final
   stats. At a clean exit the daemon removes what it created: the ring, the Recorder's
   stats file and the lock. A producer still attached then is warned about (what it
   writes afterwards is recorded by nobody): stop producers first.

Exit statuses (the CLI's): 0 when the final stats are ``complete``, 3 when data was
lost or a format failed, 2 when the daemon could not start.

Logging is the process's: :func:`configure_logging` installs the daemon's handler
(ISO-8601 UTC timestamps, ``key=value`` fields; or one JSON object per line) on the
``daq_storage`` logger; :func:`run_daemon` only logs.
"""

from daq_storage.config import daemon_ring_path
from daq_storage.daemon._logging import configure_logging
from daq_storage.daemon._run import (
    DEFAULT_RECORD_BYTES,
    DaemonInfo,
    DaemonLock,
    RingPlan,
    lock_path,
    plan_ring,
    run_daemon,
)

__all__ = [
    "DEFAULT_RECORD_BYTES",
    "DaemonInfo",
    "DaemonLock",
    "RingPlan",
    "configure_logging",
    "daemon_ring_path",
    "lock_path",
    "plan_ring",
    "run_daemon",
]
