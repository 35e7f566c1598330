"""Using a trained model: predictors, prediction files, post-processing and export.

    predictor       runs, checkpoints or ONNX files -> one predictor (ensembles, TTA)
    predict         segkit predict: image files in, mask files (and overlays) out
    postprocess     largest connected component, per image or per case in 3D
    export          segkit export: ONNX or TorchScript with segkit's metadata, and reading them back
    overlays        label colours and the overlay with a legend

Modules are imported when used; importing this package imports nothing.
"""
