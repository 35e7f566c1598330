"""Scoring: what a model's predictions are worth, and how sure we can be.

    surface         boundary metrics of binary masks: HD95, ASSD, surface Dice
    surface_report  those metrics per case and label, for evaluate
    evaluate        segkit evaluate: a run, checkpoint, ONNX file or cross-validation scored on a split
    cv              segkit cv: K fold runs, the out-of-fold report, the choice of inference variant
    volume_evaluate 3D models scored on whole volumes, case by case
(The confusion counts are segkit.scoring's, report.html is segkit.runs', the folds as one ensemble
segkit.inference.cv_sources'.)

Modules are imported when used; importing this package imports nothing.
"""
