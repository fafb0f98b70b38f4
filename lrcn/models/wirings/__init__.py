"""Decoder wirings: how the visual feature and the words reach the caption LSTM(s).

One module per wiring (``show_tell``, ``lrcn1u``, ``lrcn2f``, ``show_attend_tell`` and
``temporal_attention``), each registered by name with
`register_wiring`; `lrcn.models.decoder.LSTMDecoder` looks its ``variant`` up with `get_wiring`.
"""

from lrcn.models.wirings import (  # noqa: F401  (registers the built-ins)
    lrcn1u,
    lrcn2f,
    show_attend_tell,
    show_tell,
)
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
