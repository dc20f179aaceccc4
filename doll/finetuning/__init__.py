"""Stage 4: fine-tuning on small real tasks (``run.finetune``, also ``doll.finetune(...)``).

``settings`` (the options and shared helpers), ``segment`` (jsrt / lung / covid),
``seg4cls/`` (segmentation for classification), ``mixed`` (masks + image labels), and
``run`` (the ``TASKS`` table and ``finetune``)."""
