"""``lrcn report``: one self-contained HTML page of an evaluation, to read a model's mistakes.

The page shows the split's metrics (the model, the leave-one-out human references and the
most-frequent-caption baseline side by side), then every item: a thumbnail (a strip of frames for
video), the generated caption, the references and the item's BLEU-4 and CIDEr (read from the
evaluation's ``<split>_per_item.json``; evaluations older than that file are scored again),
sortable by clicking a column header. The metrics carry their 95% intervals, and what the
captions copy from training and how varied they are follows. Activity runs list label, prediction and probability instead.
For an attention captioner the evaluation's ``<split>_attention.npz`` adds, under each caption,
the strip of where every word looked (`lrcn.visualize.attention_strip`).

Thumbnails are embedded as data URIs and the page carries its own CSS and a few lines of
JavaScript, so the file can be mailed or archived alone. When the split has not been evaluated
yet, `write_report` runs `lrcn.predict.evaluate` on the run's best checkpoint first.
"""

from lrcn.report.collect import write_report

__all__ = ["write_report"]
