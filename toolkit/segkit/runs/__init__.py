"""The run directory: what training writes and everything else reads, below the stages that use it.

    checkpoint  checkpoints: written atomically, read weights-only and checked, the model rebuilt from one
    rundir      the run directory's files (config.toml, splits.csv, metrics.csv, summary.json), resume state
    runlock     one writer per run directory
    runfiles    a run's files read back as untrusted input (summary, tables, images inside the run)
    report      report.html: a run's curves, figures and scores on one page
    window      the window (patch, overlap) a run trained on, from config to checkpoint to export and back

Modules are imported when used; importing this package imports nothing.
"""
