"""The method's mathematics: PEDCC points, losses, the MLP head, kNN mining, metrics, selection.

Pure computation on arrays and tensors (no files, no devices chosen, no logging of progress);
nothing here imports another icbpl package.
"""
