"""Point-in-time buyer features from a transaction log, its data contract and a simulator."""

from features.build import FEATURE_COLUMNS, FEATURE_SET_VERSION, build_features, buyer_features
from features.io import LogFileError, fingerprint, load_log, write_log
from features.labels import label_matured, label_window, labels
from features.log import TABLES, TransactionLog, as_of_time
from features.schema import LogValidationError, validate_log

__all__ = [
    "FEATURE_COLUMNS",
    "FEATURE_SET_VERSION",
    "TABLES",
    "LogFileError",
    "LogValidationError",
    "TransactionLog",
    "as_of_time",
    "build_features",
    "buyer_features",
    "fingerprint",
    "label_matured",
    "label_window",
    "labels",
    "load_log",
    "validate_log",
    "write_log",
]
