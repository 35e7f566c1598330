"""Scoring: what a model's predictions are worth, and how sure we can be.

    metrics         confusion counts (per label with several labels) and the on-device metric accumulator
    surface         boundary metrics of binary masks: HD95, ASSD, surface Dice
    surface_report  those metrics per case and label, for evaluate
    evaluate        segkit evaluate: a run, checkpoint, ONNX file or cross-validation scored on a split
    cv              segkit cv: K fold runs, the out-of-fold report, the folds as one ensemble
    report          report.html: a run's curves, figures and scores on one page

Modules are imported when used; importing this package imports nothing.
"""
