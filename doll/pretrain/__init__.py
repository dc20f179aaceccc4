"""Stage 3: PSPNet pretraining on DoLL labels (``train.pretrain``, which is ``doll.pretrain(...)``)."""
