"""Clearsight's data layer: image decoding, dataset formats, synthetic inspection data.

The lowest layer: it imports nothing from ``models``, ``pipeline`` or ``serve``.
"""
