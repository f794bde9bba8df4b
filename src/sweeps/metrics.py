"""The tutorial's metrics (accuracy, precision, recall, F1) and the confusion matrix, for any model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def scores(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """Accuracy, and precision/recall/F1 of the positive class (macro averages past two classes). A prediction
    outside the classes (-1: an endpoint's answer that names no label) counts as wrong, never as positive."""
    from sklearn.metrics import precision_recall_fscore_support

    binary = n_classes == 2
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average=None if binary else "macro", labels=list(range(n_classes)), zero_division=0
    )
    if binary:
        precision, recall, f1 = precision[1], recall[1], f1[1]
    return {
        "accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


def majority_baseline(y_train: np.ndarray, y_eval: np.ndarray) -> float:
    """Accuracy of always answering the training set's most frequent class."""
    return float(np.mean(y_eval == np.bincount(y_train).argmax()))


def confusion_png(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str], path: Path) -> Path:
    """Save the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=list(range(len(label_names))))
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ConfusionMatrixDisplay(matrix, display_labels=label_names).plot(ax=ax, colorbar=False)
    ax.set_title("eval confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
