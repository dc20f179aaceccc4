"""``doll predict``: apply a doll segmenter to new images (``run.predict``, also ``doll.predict(...)``).

``model`` (find and load the segmenter of any doll output folder: ``load_segmenter``, also
``doll.load_segmenter(...)``), ``inputs`` (the image files named on the command line and
their output names) and ``run`` (settings, inference, the files written)."""
