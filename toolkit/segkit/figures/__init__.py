"""Figures shared by the stages that draw them: training curves, predictions, overlays, label colours.

    plots     curves.png, predictions.png and cases.png; outlines and overlays of masks on images
    overlays  label colours and the overlay with a legend (predict, inspect, report)

Modules are imported when used; importing this package imports nothing.
"""
