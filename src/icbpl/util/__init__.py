"""Plumbing shared by the packages: atomic files, checkpoints, devices and threads, CSV cells."""
