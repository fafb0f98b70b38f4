"""Model parts: encoders and decoder wirings (both registries), TimeDistributed, the caption decoder,
captioners, the activity classifier and the attribute heads that pretrain an encoder."""

from lrcn.models.attributes import AttributeClassifier
from lrcn.models.captioner import Captioner, ImageCaptioner, MeanPool, TemporalLSTM, VideoCaptioner
from lrcn.models.classifier import (
    ActivityClassifier,
    build_seed_cnn,
    build_seed_model,
    keras_same_padding,
    load_keras_seed_weights,
    single_lstm_bias_,
)
from lrcn.models.decoder import LSTMDecoder
from lrcn.models.encoders import (
    ENCODERS,
    Encoder,
    EncoderSpec,
    GridSpec,
    available_encoders,
    create_encoder,
    encoder_spec,
    register_encoder,
)
from lrcn.models.init import keras_init_
from lrcn.models.time_distributed import TimeDistributed
from lrcn.models.vit import SmallViT
from lrcn.models.wirings import (
    WIRINGS,
    Wiring,
    available_wirings,
    get_wiring,
    register_wiring,
)

__all__ = [
    "ENCODERS",
    "WIRINGS",
    "ActivityClassifier",
    "AttributeClassifier",
    "Captioner",
    "Encoder",
    "EncoderSpec",
    "GridSpec",
    "ImageCaptioner",
    "LSTMDecoder",
    "MeanPool",
    "SmallViT",
    "TemporalLSTM",
    "TimeDistributed",
    "VideoCaptioner",
    "Wiring",
    "available_encoders",
    "available_wirings",
    "build_seed_cnn",
    "build_seed_model",
    "create_encoder",
    "encoder_spec",
    "get_wiring",
    "keras_init_",
    "keras_same_padding",
    "load_keras_seed_weights",
    "register_encoder",
    "register_wiring",
    "single_lstm_bias_",
]
