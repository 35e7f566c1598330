"""Planning a run from the dataset itself (``segkit plan``).

    fingerprint.py   the dataset's fingerprint, read once (reuses segkit inspect's summaries)
    timing.py        a few real training steps of a planned run, timed on this machine
    contract.py      what a planner receives (PlanRequest) and returns (Plan: settings with reasons)
    plan_file.py     plan.toml: the plan as a commented run configuration, written atomically
    make.py          the command end to end: checks first, then the two files

The built-in planner's decisions live in ``segkit_builtins.planners.default``; a plugin registers
another planner as a component of kind ``planner``.
"""

from segkit.planning.contract import Plan, PlanRequest, Setting, StepTiming

__all__ = ["Plan", "PlanRequest", "Setting", "StepTiming"]
