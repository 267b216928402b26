"""The storage actor: Arrow batches sent as messages, stored from one worker thread.

``actor = await StorageActor.start(config)``; ``await actor.call(WriteBatch(ipc_bytes,
"power_meter_01"))``; ``await actor.call(GetStats())``; ``await actor.stop()``. The
seeds' HDF5 storage actor (seed 003) in asyncio, for any table format. See
``docs/actor.md``.
"""

from daq_storage.actor._actor import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, StorageActor
from daq_storage.actor._messages import (
    Flush,
    GetStats,
    MailboxStats,
    Message,
    SetInstrumentMetadata,
    SetMetadata,
    StorageStats,
    WriteBatch,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_MESSAGES",
    "Flush",
    "GetStats",
    "MailboxStats",
    "Message",
    "SetInstrumentMetadata",
    "SetMetadata",
    "StorageActor",
    "StorageStats",
    "WriteBatch",
]
