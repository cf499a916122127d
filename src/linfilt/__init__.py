"""linfilt: class-wide machine unlearning by linear filtration."""
from linfilt.errors import (
    CorruptFileError,
    DataNotFoundError,
    IllConditionedError,
    LinfiltError,
    ModelFormatError,
)
from linfilt.filtration import (
    FiltrationRecord,
    FiltrationStep,
    absorb,
    apply_filtration,
    check_forget,
    filtration_matrix,
    mean_logits,
    retained_classes,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # `unlearn` and the weights files need torch: imported on first use, so numpy-only users don't pay
    # torch's import.
    if name in ("unlearn", "classes_of", "predict_ids", "load_unlearned"):
        import linfilt.pytorch

        return getattr(linfilt.pytorch, name)
    if name in ("save_weights", "load_weights"):
        import linfilt.modelio

        return getattr(linfilt.modelio, name)
    raise AttributeError(f"module 'linfilt' has no attribute {name!r}")

__all__ = [
    "mean_logits",
    "filtration_matrix",
    "retained_classes",
    "check_forget",
    "apply_filtration",
    "absorb",
    "unlearn",
    "classes_of",
    "predict_ids",
    "load_unlearned",
    "save_weights",
    "load_weights",
    "FiltrationRecord",
    "FiltrationStep",
    "LinfiltError",
    "IllConditionedError",
    "DataNotFoundError",
    "CorruptFileError",
    "ModelFormatError",
]
