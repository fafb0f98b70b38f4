"""Decoder wirings: how the visual feature and the words reach the caption LSTM(s).

One module per wiring (``show_tell``, ``lrcn1u``, ``lrcn2f``, ``show_attend_tell`` and
``temporal_attention``; ``transformer``, ``temporal_transformer`` and ``transformer_vector``), each registered by name with
`register_wiring`; `lrcn.models.decoder.LSTMDecoder` looks its ``variant`` up with `get_wiring`.
"""

# imported in this order, the order the registry lists the built-ins in (not sorted: noqa I001)
from lrcn.models.wirings import show_tell, lrcn1u, lrcn2f, show_attend_tell, transformer  # noqa: F401, I001
from lrcn.models.wirings.base import (
    WIRINGS,
    State,
    Trace,
    Wiring,
    available_wirings,
    get_wiring,
    register_wiring,
    remember_init_,
)

__all__ = [
    "WIRINGS",
    "State",
    "Trace",
    "Wiring",
    "available_wirings",
    "get_wiring",
    "register_wiring",
    "remember_init_",
]
