"""Stage 2: explanations distilled into DoLL labels (``run.explain``, which is ``doll.explain(...)``)."""
