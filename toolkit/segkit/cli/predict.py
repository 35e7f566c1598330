"""``segkit predict``: masks for image files from a run, a checkpoint, an ONNX export or an ensemble."""

from __future__ import annotations

import click

from segkit.cli import (
    HintedChoice,
    inference_options,
    plugin_option,
    registry_from_context,
)


@click.command("predict")
@click.argument("arguments", nargs=-1, required=True, metavar="SOURCE [SOURCE ...] INPUT [INPUT ...]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the masks (label maps).")
@click.option("--checkpoint", type=HintedChoice(["best", "last"]),
              help="Which checkpoint of a run directory. Default: best (last for a cross-validation).")
@click.option("--threshold", type=float, help="Probability threshold. Default: the (first) run's.")
@click.option("--overlay", is_flag=True, help="Also write NAME_overlay.png: the image with the predicted outline (2D images only).")
@click.option("--save-probs", is_flag=True, help="Also write NAME_prob.png: probabilities as 16-bit PNG (p * 65535); for volumes "
              "CASE_prob.nii.gz (float32), one per foreground label.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@inference_options("lcc: keep the largest connected component, per case in 3D when names end in _<slice> "
                   "(volumes: per label in 3D).",
                   "auto, cpu, cuda, cuda:N or mps (ONNX: CPU).")
@plugin_option
def predict_command(arguments: tuple[str, ...], out: str, checkpoint: str | None, threshold: float | None,
                    overlay: bool, save_probs: bool, tta: bool | None, postprocess: str | None, batch_size: int,
                    device: str, overwrite: bool, quiet: bool) -> None:
    """Write a 0/255 mask NAME.png of each input's own size into --out (volumes: a label map CASE.nii.gz).

    \b
    SOURCE: a run directory (holds config.toml or checkpoints/), a .pt checkpoint, a
            .onnx export from 'segkit export', or a 'segkit cv' directory (its fold
            models); several make an ensemble.
    INPUT:  image files, folders or globs (png, jpg, jpeg, tif, tiff), or NIfTI volumes
            (.nii.gz, .nii; CASE_0000, CASE_0001, ... files are one case's channels; a
            Decathlon folder gives its imagesTs/, else imagesTr/) for a run trained on
            volumes. One kind per call.
    The leading arguments that are models are sources; the first one that is not, and
    everything after it, are inputs. Folders and globs skip *_mask.* files.

    Exit status 1 when some input could not be read (the others are still written).
    """
    from segkit.errors import ConfigError
    from segkit.inference.cv_sources import inference_settings
    from segkit.inference.inputs import expand_all, split_arguments
    from segkit.inference.predict import predict_files
    from segkit.inference.sources import load_predictor

    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError(f"--threshold must be between 0 and 1, got {threshold}.")
    sources, inputs = split_arguments(arguments)
    sources, tta, postprocess, checkpoint = inference_settings(sources, tta, postprocess, checkpoint)
    files, volumes = expand_all(inputs)
    if volumes and overlay:
        raise ConfigError("--overlay draws PNG outlines of 2D images; for volumes open the input and its label map "
                          "CASE.nii.gz together in a viewer (ITK-SNAP, 3D Slicer, FSLeyes).")
    registry = registry_from_context()
    predictor = load_predictor(sources, checkpoint=checkpoint, device=device, tta=tta, registry=registry)
    if volumes:
        from segkit.inference.volume_files import predict_volumes

        summary = predict_volumes(predictor, volumes, out, registry=registry, threshold=threshold,
                                  save_probs=save_probs, postprocess=postprocess, batch_size=batch_size,
                                  overwrite=overwrite, progress=not quiet)
        click.echo(f"wrote {summary.written} label map(s) to {summary.out}: foreground in {summary.foreground_cases} "
                   f"volume(s), {summary.foreground_voxels} foreground voxel(s); {len(summary.failures)} failure(s)")
    else:
        summary = predict_files(
            predictor, files, out, threshold=threshold, overlay=overlay, save_probs=save_probs,
            postprocess=postprocess, batch_size=batch_size, overwrite=overwrite, progress=not quiet,
            warn=lambda message: click.echo(f"warning: {message}", err=True),
        )
        click.echo(f"wrote {summary.written} mask(s) to {summary.out}: lesion found in {summary.lesion_images} "
                   f"image(s), {summary.lesion_pixels} lesion pixel(s); {len(summary.failures)} failure(s)")
    for path, reason in summary.failures[:10]:
        click.echo(f"  failed: {path}: {reason}", err=True)
    if len(summary.failures) > 10:
        click.echo(f"  ... and {len(summary.failures) - 10} more", err=True)
    if summary.failures:
        click.get_current_context().exit(1)


COMMANDS = [predict_command]
