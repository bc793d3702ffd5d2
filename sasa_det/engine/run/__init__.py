"""What one training run must survive, and the owner of its folder.

``run_directory`` (the layout; the only code that replaces or deletes a run's files), ``checkpoint_io``
(atomic writes, full disks), ``checkpoints`` (last, best, the config inside), ``signals`` (clean stops,
SLURM requeue), ``rng_state``, ``resume`` and ``resume_position`` (where a run continues), ``run_lock`` (one
training per folder), ``data_fingerprint``, ``log_history`` and ``loggers`` (the logs continued), ``ema``,
``init_from``, ``options`` (the run options) and ``survival`` (all their callbacks, in order).
"""
