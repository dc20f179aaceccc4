"""Stage 4: fine-tuning on small real tasks (``run.finetune``; callable as ``doll.finetune(...)``).

``settings`` (the options and shared helpers), ``segment`` (jsrt / lung / covid),
``seg4cls/`` (segmentation for classification), ``mixed`` (masks + image labels), and
``run`` (the ``TASKS`` table and ``finetune``)."""
from doll._api import make_callable

make_callable(__name__, "doll.finetune.run:finetune")
