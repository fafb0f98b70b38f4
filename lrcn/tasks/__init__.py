"""The built-in tasks, one module each; importing this package registers them (`lrcn.task`).

- ``caption`` and ``video_caption`` (`lrcn.tasks.caption`): image and video description;
- ``activity`` (`lrcn.tasks.activity`): a label per clip (LRCN's activity recognition);
- ``attributes`` (`lrcn.tasks.attributes`): stage 1 of the demo, the CNN pretrained on the
  generator's ground truth.

These modules sit at the top of the package's layers: they use the engine, the evaluation and the
report, and the core reaches them only through the registry, as it reaches a plug-in's task.
"""

from lrcn.task import register_task
from lrcn.tasks.activity import ActivityTask
from lrcn.tasks.attributes import AttributesTask
from lrcn.tasks.caption import CaptionTask

# in this order: the order `task` choices are listed in
register_task(CaptionTask("caption", video=False))
register_task(CaptionTask("video_caption", video=True))
register_task(ActivityTask())
register_task(AttributesTask())

__all__ = ["ActivityTask", "AttributesTask", "CaptionTask"]
