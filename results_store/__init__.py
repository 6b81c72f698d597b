"""The Parquet results store, shared by the trainable (which writes it), the sweep (which asks what is done)
and the analysis (which reads it). It imports neither torch nor ray."""
from results_store.store import (SCHEMAS, TABLES, TRIAL_STATUSES, ResultsStore, StoreError, check_writable,
                                 filesystem_for, read_table)

__all__ = ["SCHEMAS", "TABLES", "TRIAL_STATUSES", "ResultsStore", "StoreError", "check_writable", "filesystem_for",
           "read_table"]
