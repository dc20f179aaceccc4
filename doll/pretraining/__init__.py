"""Stage 3: segmenter pretraining (PSPNet by default, any ``--decoder``) on DoLL labels (``train.pretrain``, which is ``doll.pretrain(...)``)."""
