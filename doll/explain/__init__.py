"""Stage 2: explanations distilled into DoLL labels (``run.explain``; callable as ``doll.explain(...)``)."""
from doll._api import make_callable

make_callable(__name__, "doll.explain.run:explain")
