"""Using a trained model: predictors, prediction files, post-processing and export.

    predictor       runs, checkpoints or ONNX files -> one predictor (ensembles, TTA)
    stream          images through a predictor in batches and in order, case by case
    inputs          what segkit predict is given: model sources, image files, case ids
    predict         segkit predict: image files in, mask files (and overlays) out
    sliding_window  SlidingWindowInferer: an image or volume through a patch model by overlapping, Gaussian-
                    weighted windows (segkit's one implementation: validation, evaluate, predict, export)
    whole_volume    a 3D model over whole volumes: resampled as trained, slid, probabilities on the volume's grid
    volume_limits   what predicting whole volumes needs (channels, window count, memory), checked first
    cv_sources      a segkit cv folder as the ensemble of its fold models, with its chosen TTA/post-processing
    volume_predict  one volume through a run's model: 2D slice by slice, 3D by sliding windows; label map
    volume_files    segkit predict on NIfTI volumes: cases, NIfTI label maps with the input's header
    postprocess     largest connected component, per image or per case in 3D
    export          segkit export: ONNX or TorchScript with segkit's metadata
    onnx_file       a segkit ONNX export read back (metadata, graph checks, predictor), as untrusted input

Modules are imported when used; importing this package imports nothing.
"""
