"""``doll study``: the paired label-efficiency study (also ``doll.study(...)``).

``run`` (the settings, the cells and their schedule: every cell one ``doll.finetune`` call),
``stats`` (t intervals over seeds, the paired bootstrap over test images, efficiency read
off the curves), ``summary`` (cells -> groups and paired comparisons) and ``report``
(study.json, summary.md, report.html and its figures)."""
