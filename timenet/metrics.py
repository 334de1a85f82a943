"""Evaluation metrics for anomaly detection and localization.

Thin wrappers over the C core (`csrc/metrics/`): every metric sorts the
scores once (a threaded radix sort) and sweeps them, one curve point per
distinct score. A sample is predicted positive at threshold ``t`` when
``score >= t``.

Inputs are any array-likes. Scores must be finite; float32 arrays are
processed as float32, everything else as float64 (exact for bool, float16
and integers up to 2**53), with identical results. Labels and masks are bool
or non-negative numbers, non-zero = positive / anomalous (so 0/255 masks
work; for sklearn-style {-1, 1} labels pass ``labels == 1``). Non-contiguous
and byte-swapped arrays are accepted (converted), and inputs are never
modified. Bad input raises ``ValueError`` or ``TypeError``.

The image-level metrics match scikit-learn (``roc_auc_score``, ``roc_curve``,
``precision_recall_curve``); AUPRO is the official MVTec AD evaluation
(Bergmann et al., ``compute_pro`` + ``trapezoid``), computed in float64
throughout where the official script rounds the FPR to float32.

On the GPU: scores or maps given as a CUDA array (a ``timenet.cuda.DeviceArray``
or a CUDA ``Tensor``, float32) are sorted on their device
(``_core.cuda_<metric>``, csrc/cuda/metrics.cu); labels and masks are read
on the host (device ones are copied back) and checked as above. The results
are the CPU's (host floats and numpy arrays) to about 1e-12: the counts are
exact integers on both, AUROC, F1 and the ROC curve agree bit for bit.
"""
import numpy as np

from ._loader import _core

__all__ = ["roc_curve", "auroc", "pixel_auroc", "f1_max", "pro_curve", "aupro"]

_DeviceArray = _core.DeviceArray


def _on_device(x):
    """The DeviceArray of `x` when it is one or a CUDA Tensor, else None."""
    if type(x) is _DeviceArray:
        return x
    data = getattr(x, "data", None)
    return data if type(data) is _DeviceArray else None


def _host(x):
    """Labels and masks as the glue reads them: on the host (copied back
    from a device, where they could not be range-checked)."""
    dev = _on_device(x)
    return x if dev is None else dev.numpy()


def _run(name, scores, labels, **kw):
    """`_core.<name>`, or `_core.cuda_<name>` for scores on a GPU."""
    dev = _on_device(scores)
    if dev is None:
        return getattr(_core, name)(scores, labels, **kw)
    return getattr(_core, "cuda_" + name)(dev, _host(labels), **kw)


def roc_curve(scores, labels, drop_intermediate=True):
    """Receiver operating characteristic curve.

    The same points as ``sklearn.metrics.roc_curve`` with the same
    ``drop_intermediate`` (points collinear with both neighbours dropped).

    Parameters
    ----------
    scores : array_like, shape (n,)
        Finite scores, higher = more anomalous.
    labels : array_like, shape (n,)
        Non-zero = positive. Both classes must be present.
    drop_intermediate : bool, default True

    Returns
    -------
    fpr, tpr, thresholds : ndarray of float64, shape (m,)
        Increasing rates at decreasing thresholds; the first point is
        ``(0, 0)`` at threshold ``inf``.
    """
    return _run("roc_curve", scores, labels, drop_intermediate=bool(drop_intermediate))


def auroc(scores, labels):
    """Area under the ROC curve (I-AUROC for image scores).

    Equals ``sklearn.metrics.roc_auc_score`` (ties count one half), computed
    exactly in integers and rounded once.

    For P-AUROC over all pixels of a test set use :func:`pixel_auroc`, which
    is ``auroc(maps.ravel(), masks.ravel())``: flattening contiguous arrays
    copies nothing.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Finite scores, higher = more anomalous.
    labels : array_like, shape (n,)
        Non-zero = positive. Both classes must be present.

    Returns
    -------
    float
    """
    return _run("auroc", scores, labels)


def pixel_auroc(maps, masks):
    """P-AUROC: :func:`auroc` over every pixel of every map.

    Parameters
    ----------
    maps : array_like, shape (N, H, W) (any shape)
        Finite anomaly maps.
    masks : array_like, same shape as `maps`
        Ground truth, non-zero = anomalous.

    Returns
    -------
    float
    """
    dev = _on_device(maps)
    maps = np.asarray(maps) if dev is None else dev  # a device view reshapes without a copy
    masks = np.asarray(_host(masks))
    if tuple(maps.shape) != masks.shape:
        raise ValueError(f"pixel_auroc: masks must have the shape of maps {tuple(maps.shape)}, "
                         f"got {masks.shape}")
    return _run("auroc", maps.reshape(-1), masks.reshape(-1))


def f1_max(scores, labels):
    """The best F1 score over all thresholds, and that threshold.

    F1 at threshold ``t`` is ``2 TP / (2 TP + FP + FN)`` with positives
    ``score >= t``: the maximum of ``2 P R / (P + R)`` over the points of
    ``sklearn.metrics.precision_recall_curve``. On exact ties the lowest
    threshold wins. Pixel-level: ``f1_max(maps.ravel(), masks.ravel())``.

    Parameters
    ----------
    scores : array_like, shape (n,)
        Finite scores.
    labels : array_like, shape (n,)
        Non-zero = positive; at least one positive.

    Returns
    -------
    f1 : float
    threshold : float
    """
    return _run("f1_max", scores, labels)


def pro_curve(maps, masks, max_fpr=1.0):
    """Per-region overlap (PRO) curve of the official MVTec AD evaluation.

    At every distinct score ``t`` (descending): ``fpr`` = normal pixels with
    score >= t over all normal pixels of all maps, ``pro`` = the mean over
    all ground-truth regions of the whole set of the fraction of the
    region's pixels with score >= t. Regions are the 8-connected components
    of each mask (the official 3x3 structure; ``scipy.ndimage.label``
    defaults to 4-connectivity).

    Parameters
    ----------
    maps : array_like, shape (N, H, W)
        Finite anomaly maps.
    masks : array_like, shape (N, H, W)
        Ground truth, non-zero = anomalous. At least one anomalous and one
        normal pixel.
    max_fpr : float in (0, 1], default 1.0
        End the curve at its first point with ``fpr > max_fpr`` (enough to
        integrate up to `max_fpr`). Below 1 this is much faster and smaller:
        the full curve has a point per distinct score, ~10^7 for a test set.

    Returns
    -------
    fpr, pro, thresholds : ndarray of float64, shape (m,)
        The first point is ``(0, 0)`` at threshold ``inf``; with
        ``max_fpr=1`` the last is ``(1, 1)`` at the lowest score. (The
        official script appends a second ``(1, 1)``, which adds nothing.)
    """
    return _run("pro_curve", maps, masks, max_fpr=float(max_fpr))


def aupro(maps, masks, fpr_limit=0.3):
    """AU-PRO: area under the PRO curve up to `fpr_limit`, over `fpr_limit`.

    The official MVTec AD integration: trapezoids up to the last FPR below
    the limit, then the segment crossing it cut at the PRO value linearly
    interpolated at the limit; always divided by `fpr_limit` (never by the
    last FPR reached, which would let the score exceed 1).

    Parameters
    ----------
    maps, masks : see :func:`pro_curve`
    fpr_limit : float in (0, 1], default 0.3

    Returns
    -------
    float in [0, 1]
    """
    return _run("aupro", maps, masks, fpr_limit=float(fpr_limit))
