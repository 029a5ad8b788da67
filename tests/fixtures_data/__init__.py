"""Test-data writers for icbpl.data (files are generated in tmp_path at test time)."""
