"""The run layer: from a config to a finished run directory, and back.

``resolve`` (device, window, executor chosen once), ``driver`` (the solver loop with progress,
checkpoints, Ctrl-C and NaN handling), ``assets`` (one per representation), ``outputs``
(``write_outputs(asset, out, cfg)``), ``metrics``, ``directory`` (the run directory's files) and
``loading`` (``load_run``). Above ``systems`` and ``export``; ``bench`` and ``commands`` use it.
"""
