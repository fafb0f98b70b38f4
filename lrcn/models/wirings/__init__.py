"""Decoder wirings: how the visual feature and the words reach the caption LSTM(s).

One module per wiring (``show_tell``, ``lrcn1u``, ``lrcn2f``), each registered by name with
`register_wiring`; `lrcn.models.decoder.LSTMDecoder` looks its ``variant`` up with `get_wiring`.
"""

from lrcn.models.wirings import lrcn1u, lrcn2f, show_tell  # noqa: F401  (registers the built-ins)
from lrcn.models.wirings.base import (
    State,
    Wiring,
    available_wirings,
    get_wiring,
    register_wiring,
    remember_init_,
)

__all__ = [
    "State",
    "Wiring",
    "available_wirings",
    "get_wiring",
    "register_wiring",
    "remember_init_",
]
