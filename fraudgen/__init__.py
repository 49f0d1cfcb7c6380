"""fraudgen: synthetic financial transactions and labelled fraud scenarios, at scale, on Ray."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__version__ = "0.1.0"


def read_batch(uri: str, verify: bool = True) -> pa.Table:
    """A published batch as one Arrow table (see :func:`fraudgen.sinks.store.read_batch`)."""
    from fraudgen.sinks.store import read_batch as _read_batch

    return _read_batch(uri, verify)
