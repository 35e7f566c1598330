"""Using a trained model: predictors, prediction files, post-processing and export.

    predictor       runs, checkpoints or ONNX files -> one predictor (ensembles, TTA)
    stream          images through a predictor in batches and in order, case by case
    inputs          what segkit predict is given: model sources, image files, case ids
    predict         segkit predict: image files in, mask files (and overlays) out
    sliding_window  a volume (or large image) through a model by overlapping, Gaussian-weighted windows
    volume_predict  one volume through a run's model: 2D slice by slice, 3D by sliding windows; label map
    volume_files    segkit predict on NIfTI volumes: cases, NIfTI label maps with the input's header
    postprocess     largest connected component, per image or per case in 3D
    export          segkit export: ONNX or TorchScript with segkit's metadata
    onnx_file       a segkit ONNX export read back (metadata, graph checks, predictor), as untrusted input
    overlays        label colours and the overlay with a legend

Modules are imported when used; importing this package imports nothing.
"""
