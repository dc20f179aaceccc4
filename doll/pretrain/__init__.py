"""Stage 3: PSPNet pretraining on DoLL labels (``train.pretrain``; callable as ``doll.pretrain(...)``)."""
from doll._api import make_callable

make_callable(__name__, "doll.pretrain.train:pretrain")
