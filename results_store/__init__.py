"""The Parquet results store, shared by the trainable (which writes it), the sweep (which asks what is done)
and the analysis (which reads it). It imports neither torch nor ray."""
from results_store.compaction import CompactionReport
from results_store.files import StoreError, StoreFiles, check_writable, filesystem_for
from results_store.lease import Heartbeat, Lease, LeaseHeld, LeaseInfo, acquire, holder_of
from results_store.masks import MissingMasks, masked_trial_ids, read_mask_arrays, read_masks, read_packed_masks
from results_store.schema import SCHEMAS, TABLES, TRIAL_STATUSES
from results_store.store import ResultsStore, read_table
from results_store.sweeps import grid_trial_ids, record_grid, recorded_sweeps

__all__ = ["SCHEMAS", "TABLES", "TRIAL_STATUSES", "CompactionReport", "Heartbeat", "Lease", "LeaseHeld", "LeaseInfo",
           "MissingMasks", "ResultsStore", "StoreError", "StoreFiles", "acquire", "check_writable", "filesystem_for",
           "grid_trial_ids", "holder_of", "masked_trial_ids", "read_mask_arrays", "read_masks", "read_packed_masks",
           "read_table", "record_grid", "recorded_sweeps"]
