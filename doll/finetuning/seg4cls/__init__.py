"""Segmentation for classification (``doll finetune --task seg4cls``).

Train a segmenter on a *few* pixel-labelled images, then turn its probability maps
into image labels with a summarizing function g(.), and compare against a plain
classifier and a multitask (Y-Net style) network trained in the same run.

Data
  * test split: ``test`` when the data set has one, else ``valid``;
  * validation split (choosing t/tau and training the summarizers; the classifier's and
    the multitask net's model selection): ``valid`` when it exists and differs from the
    test split, else a seeded 20 % of the training *patients* (taken out of train by
    ``doll.data.splits.hold_out``, the patient hold-out of every stage);
  * classes: the data set's image classes that have a mask structure of the same name
    (phantom: the 13 findings). Otherwise a known alias (``infection`` masks <->
    ``COVID-19`` images: COVID-QU-Ex, QaTa), or, when the data set has exactly one
    structure and one class, that pair. Anything else is a DollError;
  * masks for the segmenter: a seeded ``--label-fraction`` of the training images (at
    least one), cycled so that an epoch has as many samples as there are training
    images (as many as the classifier sees; each copy augmented differently); image
    labels: all training images. A class map counts as labelled
    where its mask file exists, where the image label is 0 (empty mask), and always on
    the phantom (a finding without a mask file is absent there);
  * raw labels 1 / 0 / -1 / NaN; -1 and NaN are left out of every AUROC and loss.

Methods (``metrics.json`` keys)
  * ``seg4cls_rule``: per class, t in {0.3, 0.5, 0.7, 0.9} and tau (pixels) in {0} and
    the 0, 10, ..., 90 % quantiles of the validation positives' pixel counts, less one; an
    image is positive when more than tau pixels have probability > t; (t, tau) maximise balanced
    accuracy on validation. The continuous score for AUROC is the number of pixels with
    probability > t (so AUROC depends on t, not on tau);
  * ``seg4cls_linear``: per class, logistic regression on its probability map average-
    pooled to 8x8;
  * ``seg4cls_pool-linear``: per class, [max, mean, top-1 % mean] -> logistic regression;
  * ``seg4cls_cnn-mask``: a tiny CNN on all (C, H, W) probability maps -> C logits;
  * ``seg4cls_embedding``: logistic regression (D -> C, ridge penalty 0.05 x sum of
    squared weights) on the segmenter's decoder features (the input of its
    segmentation head), global average- and max-pooled, standardised.
  The trained summarizers learn from the *validation* split's image labels (masked BCE,
  AdamW, 200 steps of up to 64 images): the segmenter's maps on its own training images
  would be over-confident. Choose some with ``--summarizer`` ("all", the default, or a
  comma-separated list).
  * ``classifier``: torchvision ``--encoder`` (resnet18 if not a classifier arch)
    trained on all training image labels; the best validation-AUROC epoch is kept;
  * ``multitask``: the same segmenter plus global-average-pool(last encoder feature) ->
    linear, trained on seg loss (only on the masked subset) + masked BCE (all images).

Semi-supervised (``pseudo="pseudo"`` / ``"boosted"``, CLI ``--pseudo`` / ``--boosted``): the
segmenter above is the *teacher*; its masks (probability > 0.5) become pseudo-masks of
the training images that have no real mask, and a *student* (same init and settings)
is trained on real + pseudo masks for ``--epochs``; the student is the segmenter whose
maps the summarizers read. With ``boosted``, per image and class: image label 0 -> an
empty pseudo-mask; label 1 and an empty teacher mask -> left out (no segmentation loss
for that class on that image); label 1 and a non-empty teacher mask -> the teacher's
mask; unknown label (-1 / blank) -> left out. Plain ``pseudo`` keeps every teacher mask.
Images with real masks always keep them. Both the teacher's and the student's IoU are
reported.

Reported on the test split: AUROC per class and mean; recall at a per-class threshold
giving 90 % specificity on the test negatives, by ground-truth lesion-area tercile and
by location (upper/middle/lower third x image-left/right half, from the mask
centroid), pooled over classes; the segmenter's IoU (prob > 0.5) on test positives;
on the phantom, the robust Pneumothorax AUROC (positives without chest tube vs
negatives with one; ``findings/ground_truth.csv``; images without a ground-truth row
count as without tube).

Image size: ``--image-size``, else the pretrained network's, else the phantom's own
size (phantom), else 256.

Modules: ``data`` (splits, masks, pseudo-masks), ``models`` (the segmenter's task, the
multitask net, the trained summarizers' networks), ``summarizers`` (mask -> image label),
``evaluate`` (the test-split scores), ``run`` (the run itself).
"""
