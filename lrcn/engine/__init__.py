"""Training and evaluation loops: ``train_one_epoch``, the evaluation loops and ``fit``.

Runs are exactly resumable: the data order depends only on (seed, epoch), checkpoints hold the
position inside the epoch and every RNG state, and SIGINT/SIGTERM save a checkpoint before exiting.

- ``loop``: one training epoch (``train_one_epoch``) and the ``TrainState`` it advances.
- ``optim``: optimizer and learning-rate schedule.
- ``attributes``: scoring an encoder pretrained on attribute labels (task attributes).
- ``evaluation``: decoding a loader into captions, scoring them, classifier accuracy.
- ``run``: a task's data, model and validation, built from a config.
- ``resume``: what a resumed run starts from, and the config changes it may take.
- ``fit``: the resumable, DDP-aware training run.
"""

from lrcn.engine.attributes import attribute_metrics, evaluate_attributes
from lrcn.engine.evaluation import evaluate_classifier, generate_captions, score_captions
from lrcn.engine.fit import StopRequested, fit
from lrcn.engine.loop import TrainState, train_one_epoch
from lrcn.engine.optim import build_optimizer, build_scheduler, planned_steps
from lrcn.engine.run import Run

__all__ = [
    "Run",
    "attribute_metrics",
    "evaluate_attributes",
    "StopRequested",
    "TrainState",
    "build_optimizer",
    "build_scheduler",
    "evaluate_classifier",
    "fit",
    "generate_captions",
    "planned_steps",
    "score_captions",
    "train_one_epoch",
]
