"""Model parts: encoders, TimeDistributed, the caption decoder, captioners and the activity classifier."""

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
from lrcn.models.encoders import Encoder, available_encoders, create_encoder
from lrcn.models.init import keras_init_
from lrcn.models.time_distributed import TimeDistributed

__all__ = [
    "ActivityClassifier",
    "Captioner",
    "Encoder",
    "ImageCaptioner",
    "LSTMDecoder",
    "MeanPool",
    "TemporalLSTM",
    "TimeDistributed",
    "VideoCaptioner",
    "available_encoders",
    "build_seed_cnn",
    "build_seed_model",
    "create_encoder",
    "keras_init_",
    "keras_same_padding",
    "load_keras_seed_weights",
    "single_lstm_bias_",
]
